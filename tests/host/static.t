#!/usr/bin/env bash
# tests/host/static.t — the static pgr (build/static/pgr) where nothing of Debian is: a chroot holding
# only the binary, /etc/hosts, /etc/resolv.conf, a CA bundle at SUSE's path (/etc/ssl/ca-bundle.pem)
# and a kubeconfig. There it prints its version, plans Spire from its built-in procedure, lists the
# backups of the sandbox's S3 (radosgw serving HTTPS, SigV4, its name answered by a DNS server the
# chroot's resolv.conf names) and dry-runs Spire's restore against the sandbox (kubesim, Kubernetes
# over TLS by a name from /etc/hosts). Without any CA bundle, the error names every path tried.
# Skipped (one TAP skip line) when build/static/pgr does not exist: `make static` builds it.
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SPGR=$ROOT/build/static/pgr
if [ ! -x "$SPGR" ]; then
  echo "1..0 # SKIP build/static/pgr does not exist (make static builds it)"
  exit 0
fi
. "$ROOT/tests/e2e/lib.sh"
CH=$E2E/chroot
CHROOT=$(command -v chroot)   # env -i leaves no PATH to find it by
DNS_ADDR=127.53.$((RANDOM % 200 + 20)).1
S3_NAME=s3.pgr-sandbox.test

# okout STATUS DESC: ok, showing $out when it failed
okout() { ok "$1" "$2"; [ "$1" = 0 ] || echo "$out" | tail -20 | sed 's/^/#   /'; }

# in_chroot ARGS...: the static pgr inside the chroot, with nothing of this machine's environment
# but the S3 settings a site would give (no site file: the defaults)
in_chroot() {
  env -i HOME=/root PATH=/ NO_COLOR=1 TERM=dumb PGR_STATE_DIR=/var/lib/pgr \
    AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL_S3="https://$S3_NAME:${S3_TLS_ENDPOINT##*:}" \
    "$CHROOT" "$CH" /pgr "$@"
}

# --- the binary
out=$(ldd "$SPGR" 2>&1)
is "ldd: not a dynamic executable" "$(echo "$out" | sed 's/^[[:space:]]*//')" "not a dynamic executable"
LC_ALL=C readelf -d "$SPGR" 2>&1 | grep -q 'There is no dynamic section'
ok $? "readelf: no dynamic section"

# --- the sandbox: kubesim (CSM fixture), radosgw with HTTPS, a DNS server for the S3 name
E2E_NODES=0 e2e_up
mkdir -p "$E2E/tls"
(cd "$E2E/tls" &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=pgr-test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
  openssl req -newkey rsa:2048 -nodes -keyout s3.key -out s3.csr -subj "/CN=$S3_NAME" &&
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n' "$S3_NAME" > s3.ext &&
  openssl x509 -req -in s3.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile s3.ext -out s3.pem
) >"$E2E/tls.log" 2>&1 || { sed 's/^/# /' "$E2E/tls.log"; bail "test certificates"; }
RGW_TLS_CERT=$E2E/tls/s3.pem RGW_TLS_KEY=$E2E/tls/s3.key RGW_ADDR=127.25.$((RANDOM % 200 + 20)).1 \
  "$ROOT/tests/s3/rgw.sh" start "$E2E/rgw" $$ >"$E2E/rgw.env" 2>"$E2E/rgw.log" ||
  { sed 's/^/# /' "$E2E/rgw.log" | tail -20; bail "radosgw did not start"; }
set -a; . "$E2E/rgw.env"; set +a
[ -n "${S3_TLS_ENDPOINT:-}" ] || bail "radosgw gave no HTTPS endpoint"
write_site   # the site file outside the chroot: S3 over plain HTTP, for uploading the backup
S3_IP=${S3_TLS_ENDPOINT#https://}; S3_IP=${S3_IP%:*}
python3 "$ROOT/tests/host/dnsd.py" "$DNS_ADDR" $$ "$S3_NAME=$S3_IP" >"$E2E/dns.out" 2>"$E2E/dns.log" &
BG_PIDS+=($!)
disown $!   # stopped by the clean-up, without a "Killed" line
for _ in $(seq 1 100); do grep -q ready "$E2E/dns.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$E2E/dns.out" || { sed 's/^/# /' "$E2E/dns.log"; bail "the DNS server did not start"; }

# a Spire backup in the bucket, uploaded from outside over plain HTTP
"$PGR" -e 'local c = assert(require("pgr.s3").connect{}) assert(c:create_bucket("postgres-backup"))' ||
  bail "cannot create the bucket"
backup spire-postgres
s3_upload "$DUMP" "$MANIFEST"

# --- the chroot: only these files
mkdir -p "$CH/etc/ssl" "$CH/root/.kube"
cp "$SPGR" "$CH/pgr"
printf '127.0.0.1 localhost kubernetes\n' > "$CH/etc/hosts"
printf 'nameserver %s\noptions timeout:2 attempts:3\n' "$DNS_ADDR" > "$CH/etc/resolv.conf"
port=$(sed -n 's|^ *server: https://127.0.0.1:\([0-9]*\)$|\1|p' "$KUBECONFIG")
sed "s|server: https://127.0.0.1:$port|server: https://kubernetes:$port|" "$KUBECONFIG" > "$CH/root/.kube/config"
grep -q "server: https://kubernetes:$port" "$CH/root/.kube/config" || bail "kubeconfig without its server"
files=$(cd "$CH" && find . -type f | sort | tr '\n' ' ')
is "the chroot holds the binary, hosts, resolv.conf and a kubeconfig, nothing else yet" "$files" \
  "./etc/hosts ./etc/resolv.conf ./pgr ./root/.kube/config "

# --- pgr version, pgr plan
out=$(in_chroot version 2>&1)
echo "$out" | head -1 | grep -q '^pgr [0-9.]* (static, musl [0-9.]*)$'; ok $? "pgr version: static, musl"
echo "$out" | grep -q '^  libcurl   [0-9.]* (OpenSSL/3'; ok $? "pgr version: libcurl with OpenSSL"
echo "$out" | grep -q '^    curl [0-9]'; ok $? "pgr version: names the Debian source packages"
out=$(in_chroot plan spire 2>&1); rc=$?
is "pgr plan spire: exit 0" "$rc" 0
echo "$out" | head -1 | grep -q '^spire — Restore Postgres for Spire (spire/spire-postgres), [0-9]* steps'
okout $? "pgr plan spire: the built-in procedure"

# --- S3 over TLS: no CA bundle anywhere, then SUSE's path
out=$(in_chroot backups spire 2>&1); rc=$?
is "without a CA bundle: pgr backups fails" "$rc" 1
missing=1
echo "$out" | grep -q "no CA bundle found to verify the server (tried /etc/ssl/ca-bundle.pem, /var/lib/ca-certificates/ca-bundle.pem, /etc/pki/tls/certs/ca-bundle.crt, /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem, /etc/ssl/certs/ca-certificates.crt)" && missing=0
okout $missing "without a CA bundle: the error names every path tried"
cp "$E2E/tls/ca.pem" "$CH/etc/ssl/ca-bundle.pem"
out=$(in_chroot backups spire 2>&1); rc=$?
is "with SUSE's /etc/ssl/ca-bundle.pem: pgr backups spire succeeds" "$rc" 0
echo "$out" | grep -q "complete  $(basename "$DUMP" .psql)\$"
okout $? "pgr backups lists the backup uploaded, complete"
grep -q "^$S3_NAME 1\$" "$E2E/dns.log"; ok $? "the S3 name was resolved by DNS (resolv.conf), without NSS"

# --- the dry run against the sandbox: Kubernetes over TLS, S3 over TLS, the pods' PostgreSQL.
# The chroot has no ssh and none of CSM's scripts that Spire's last steps run: its site file (at the
# default place) says so, as a site without them would; the S3 settings come from it too.
mkdir -p "$CH/etc/pgr"
cat > "$CH/etc/pgr/site.lua" <<LUA
return {
  s3 = { endpoint = "https://$S3_NAME:${S3_TLS_ENDPOINT##*:}", region = "us-east-1",
         credentials = { access_key = "$S3_ACCESS_KEY", secret_key = "$S3_SECRET_KEY" } },
  commands = { spire_restart_agent = false, spire_fix_storage = false, spire_verify_jwt = false },
}
LUA
rv0=$(kubectl get postgresql spire-postgres -n spire -o jsonpath='{.metadata.resourceVersion}')
sts0=$(replicas statefulset spire-server spire)
timeout 600 env -i HOME=/root PATH=/ NO_COLOR=1 TERM=dumb PGR_STATE_DIR=/var/lib/pgr \
    "$CHROOT" "$CH" /pgr run spire --dry-run >"$E2E/out" 2>&1
rc=$?
is "pgr run spire --dry-run: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
grep -q "s3://postgres-backup/$(basename "$DUMP")" "$E2E/out"; ok $? "the dry run found the backup in S3"
is "the dry run changed nothing: the postgresql object" \
  "$(kubectl get postgresql spire-postgres -n spire -o jsonpath='{.metadata.resourceVersion}')" "$rv0"
is "the dry run changed nothing: spire-server's replicas" "$(replicas statefulset spire-server spire)" "$sts0"
steps=$(sed -n 's/^\[ *[0-9]*\/\([0-9]*\)\] .*/\1/p' "$E2E/out" | head -1)
is "the dry run ran every step" "$(grep -cE '^\[ *[0-9]+/[0-9]+\] ok ' "$E2E/out")" "${steps:-?}"
grep -qE '^dry run done: [1-9][0-9]* changes would be made; nothing was changed$' "$E2E/out"
ok $? "the dry run printed the changes it would make, and made none"

# --- the REPL on a terminal the chroot has no terminfo for: the built-in descriptions serve
SOCK=pgr-static-$$
tmux -L "$SOCK" new-session -d -s r -x 100 -y 20 \
  "env -i HOME=/root TERM=xterm-256color $CHROOT $CH /pgr repl; sleep 30" 2>/dev/null
for _ in $(seq 1 100); do tmux -L "$SOCK" capture-pane -p -t r | grep -q '^>' && break; sleep 0.1; done
tmux -L "$SOCK" send-keys -t r -l 'string.format("%d-%s", 6 * 7, json.encode({1.5}))'
tmux -L "$SOCK" send-keys -t r Enter
seen=1
for _ in $(seq 1 100); do
  tmux -L "$SOCK" capture-pane -p -t r | grep -q '^42-\[1\.5\]$' && { seen=0; break; }; sleep 0.1
done
ok $seen "the REPL evaluates and prints in the chroot (TERM=xterm-256color, no terminfo there)"
[ $seen = 0 ] || tmux -L "$SOCK" capture-pane -p -t r | sed 's/^/#   /'
tmux -L "$SOCK" kill-server 2>/dev/null

# --- locale: what a German environment would change in a C library that follows it, unchanged
out=$(env -i LANG=de_DE.UTF-8 LC_ALL=de_DE.UTF-8 "$CHROOT" "$CH" /pgr -e \
  'print(1.5, ("%.2f"):format(2.25), os.date("!%A %B %c", 0), require("pgr.json").encode({0.5}))' 2>&1)
is "output is locale-independent (numbers, dates, JSON)" "$out" \
  "1.5	2.25	Thursday January Thu Jan  1 00:00:00 1970	[0.5]"
done_testing
