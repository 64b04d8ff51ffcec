#!/usr/bin/env bash
# tests/lib/pgserver.sh — throwaway PostgreSQL servers for tests: `up DIR ADDR PORT` / `down DIR`.
# Run as root; the server runs as the postgres OS user, copied from a cached initdb template.
#   up   DIR ADDR PORT   start a server in DIR (created; owned by postgres) on ADDR:PORT (PORT 0 = a free one)
#                        and print "host=ADDR port=PORT user=postgres password=... dbname=postgres"
#   down DIR             stop it (immediate) and remove DIR
# The postgres role's password is $PGSERVER_PASSWORD (default below); TCP needs scram-sha-256, the
# unix socket in DIR is trusted. $PGSERVER_OPTS adds server options ("-c name=value ..."). The template lives in ${PGSERVER_CACHE:-/tmp}/pgr-pgtemplate-<major>.
# PGSERVER_TLS=1: the server runs as Spilo does (ssl = on; pg_hba: hostnossl reject, hostssl md5),
# with a certificate for ADDR signed by a CA of its own: DIR/tls/ca.crt.
set -eu
PGSERVER_PASSWORD=${PGSERVER_PASSWORD:-pgr-test-secret}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
major=$(basename "$(dirname "$bin")")

template() {
  local t=${PGSERVER_CACHE:-/tmp}/pgr-pgtemplate-$major-$(printf %s "$PGSERVER_PASSWORD" | md5sum | cut -c1-8)
  if [ ! -f "$t/PG_VERSION" ]; then
    # Built aside and renamed into place, so concurrent callers never see a half-made template.
    local tmp
    tmp=$(mktemp -d "${t}.XXXXXX")
    chown postgres "$tmp"
    printf '%s\n' "$PGSERVER_PASSWORD" > "$tmp.pw"; chown postgres "$tmp.pw"
    runuser -u postgres -- "$bin/initdb" -D "$tmp/data" -U postgres --pwfile="$tmp.pw" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$tmp.pw"
    mv "$tmp/data" "$t" 2>/dev/null || true   # another process may have won the race: fine
    rm -rf "$tmp"
  fi
  echo "$t"
}

free_port() {
  local addr=$1 p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    ss -Hltn "src $addr:$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
  done
  echo 0
}

case ${1:-} in
up)
  dir=$2 addr=$3 port=${4:-0}
  t=$(template)
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres "$dir"; chmod 0700 "$dir"
  cp -a "$t" "$dir/data"
  tls_opts=""
  if [ "${PGSERVER_TLS:-0}" = 1 ]; then
    tls=$dir/tls
    mkdir -p "$tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/ca.key" \
      -out "$tls/ca.crt" -days 2 -subj /CN=pgr-test-ca >/dev/null 2>&1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$tls/server.key" \
      -out "$tls/server.csr" -subj "/CN=$addr" >/dev/null 2>&1
    printf 'subjectAltName=IP:%s\n' "$addr" > "$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
      -out "$tls/server.crt" -days 2 -extfile "$tls/ext" >/dev/null 2>&1
    chown -R postgres "$tls"; chmod 0600 "$tls/server.key" "$tls/ca.key"; chmod 0644 "$tls/ca.crt"
    printf 'local all all trust\nhostnossl all all all reject\nhostssl all all all md5\n' > "$dir/data/pg_hba.conf"
    tls_opts="-c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key"
  fi
  for attempt in 1 2 3 4 5; do
    [ "${4:-0}" = 0 ] && port=$(free_port "$addr")
    if runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=$addr -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB $tls_opts ${PGSERVER_OPTS:-}" start >/dev/null; then
      echo "$addr $port" > "$dir/addr"
      echo "host=$addr port=$port user=postgres password=$PGSERVER_PASSWORD dbname=postgres"
      exit 0
    fi
    [ "${4:-0}" = 0 ] || break
  done
  echo "pgserver: could not start a server in $dir (see $dir/log)" >&2
  tail -n 5 "$dir/log" >&2 || true
  exit 1 ;;
down)
  dir=$2
  [ -d "$dir/data" ] && runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir" ;;
*) echo "usage: pgserver.sh up DIR ADDR PORT | down DIR" >&2; exit 2 ;;
esac
