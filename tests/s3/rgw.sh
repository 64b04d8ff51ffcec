#!/usr/bin/env bash
# tests/s3/rgw.sh — a throwaway single-node Ceph RADOS Gateway (the S3 server CSM runs) on loopback:
# one monitor, one memstore OSD and radosgw, cephx on, all state and logs under DIR.
#   rgw.sh start DIR [WATCH_PID]   prints S3_ENDPOINT=, S3_ACCESS_KEY=, S3_SECRET_KEY=, S3_REGION= lines;
#                                  when WATCH_PID dies, the cluster is stopped (no stray daemons)
#   rgw.sh stop DIR                stops the daemons started in DIR and removes DIR
# Env: RGW_ADDR (default 127.22.0.1), RGW_MEMSTORE_BYTES (default 1 GiB; objects live in memory),
#      RGW_TLS_CERT and RGW_TLS_KEY (PEM files): radosgw also serves HTTPS with them (beast's own
#      TLS) on another port, printed as S3_TLS_ENDPOINT=.
set -eu
cmd=${1:?usage: rgw.sh start|stop DIR [WATCH_PID]}
dir=${2:?usage: rgw.sh start|stop DIR [WATCH_PID]}
addr=${RGW_ADDR:-127.22.0.1}
access=PGRTESTACCESSKEY
secret=pgr-test-secret-key-0123456789

stop() {
  [ -d "$dir/run" ] || return 0
  local pids=()
  for f in "$dir"/run/*.pid; do
    [ -f "$f" ] && pids+=("$(cat "$f")")
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # wait for them to go (memstore keeps nothing worth a graceful shutdown)
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}

# A free port below the ephemeral range: the daemons' own outgoing connections take ephemeral
# ports on this address and could grab one picked there before radosgw binds it.
free_port() {
  python3 - "$addr" <<'PY'
import random, socket, sys
for _ in range(200):
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind((sys.argv[1], p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
PY
}

fail() {
  echo "rgw.sh: $*" >&2
  for f in "$dir"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  stop
  exit 1
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: rgw.sh start|stop DIR [WATCH_PID]" >&2; exit 2 ;;
esac

mkdir -p "$dir"/{mon,osd,run,log}
conf=$dir/ceph.conf
mon_port=$(free_port)
rgw_port=$(free_port)
tls_port=$(free_port)
tls=""
if [ -n "${RGW_TLS_CERT:-}" ]; then
  tls=" ssl_endpoint=$addr:$tls_port ssl_certificate=$RGW_TLS_CERT ssl_private_key=${RGW_TLS_KEY:?RGW_TLS_KEY too}"
fi
fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:$addr:$mon_port
public addr = $addr
keyring = $dir/keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
crash dir = $dir/crash
mon data = $dir/mon
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = ${RGW_MEMSTORE_BYTES:-1073741824}
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
ms bind ipv4 = true
ms bind ipv6 = false
[client.rgw]
rgw frontends = beast endpoint=$addr:$rgw_port$tls
rgw thread pool size = 64
rgw enable usage log = false
EOF

ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$dir/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' >/dev/null
ceph-authtool "$dir/keyring" --gen-key -n client.rgw --cap mon 'allow rw' --cap osd 'allow rwx' >/dev/null
monmaptool --create --addv a "[v2:$addr:$mon_port]" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" >/dev/null 2>&1 || fail "ceph-mon --mkfs failed"
ceph-mon -c "$conf" -i a || fail "ceph-mon did not start"

# From here on, the cluster dies with the process that asked for it.
if [ -n "${3:-}" ]; then
  watch=$3
  setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 2; done; exec "$3" stop "$2"' \
    _ "$watch" "$dir" "$(cd "$(dirname "$0")" && pwd)/rgw.sh" </dev/null >/dev/null 2>&1 &
fi

osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
timeout 30 ceph -c "$conf" osd new "$osd_uuid" 0 >/dev/null 2>&1 || fail "ceph osd new failed"
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 || fail "ceph-osd --mkfs failed"
ceph-osd -c "$conf" -i 0 >/dev/null 2>&1 || fail "ceph-osd did not start"
up=0
for attempt in 1 2 3; do
  radosgw -c "$conf" -n client.rgw >/dev/null 2>&1 || fail "radosgw did not start"
  for _ in $(seq 1 240); do
    if curl -s -o /dev/null --max-time 2 "http://$addr:$rgw_port/"; then up=1; break; fi
    # somebody took the port meanwhile: pick another and start again
    if grep -qE "failed to bind address $addr:($rgw_port|$tls_port)" "$dir/log/client.rgw.log" 2>/dev/null; then break; fi
    sleep 0.25
  done
  [ $up = 1 ] && break
  [ -f "$dir/run/client.rgw.pid" ] && kill "$(cat "$dir/run/client.rgw.pid")" 2>/dev/null || true
  sleep 0.5
  rgw_port=$(free_port)
  tls_port=$(free_port)
  [ -n "$tls" ] && tls=" ssl_endpoint=$addr:$tls_port ssl_certificate=$RGW_TLS_CERT ssl_private_key=$RGW_TLS_KEY"
  sed -i "s|^rgw frontends = .*|rgw frontends = beast endpoint=$addr:$rgw_port$tls|" "$conf"
done
[ $up = 1 ] || fail "radosgw did not answer on $addr:$rgw_port within 60 s"
timeout 30 radosgw-admin -c "$conf" -n client.admin user create --uid=pgr --display-name=pgr \
  --access-key="$access" --secret-key="$secret" >/dev/null 2>&1 || fail "radosgw-admin user create failed"

echo "S3_ENDPOINT=http://$addr:$rgw_port"
echo "S3_ACCESS_KEY=$access"
echo "S3_SECRET_KEY=$secret"
echo "S3_REGION=us-east-1"
[ -n "$tls" ] && echo "S3_TLS_ENDPOINT=https://$addr:$tls_port"
exit 0
