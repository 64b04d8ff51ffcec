# tests/e2e/lib.sh — the end-to-end sandbox: kubesim with the CSM fixture (real PostgreSQL pods), sshd
# nodes for the fan-out, a site file; TAP helpers; database fingerprints and secret logins. Sourced.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGR=${PGR:-$ROOT/pgr}
KS=${KUBESIM:-$ROOT/tests/kubesim/kubesim}
E2E=$(mktemp -d /tmp/pgr-e2e.XXXXXX)
SIM=$E2E/sim NODES=$E2E/nodes STATE=$E2E/state BACKUP=$E2E/backup
NODELIST="ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
BG_PIDS=()

e2e_cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  "$KS" down "$SIM" >/dev/null 2>&1
  bash "$ROOT/tests/lib/sshnodes.sh" down "$NODES" >/dev/null 2>&1
  [ -d "$E2E/rgw" ] && "$ROOT/tests/s3/rgw.sh" stop "$E2E/rgw" >/dev/null 2>&1
  [ -n "${E2E_KEEP:-}" ] && { echo "# kept $E2E"; return; }
  rm -rf "$E2E"
}
trap e2e_cleanup EXIT

n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi; }
is() { if [ "$2" = "$3" ]; then ok 0 "$1"; else ok 1 "$1"; echo "#   got: '$2'"; echo "#   expected: '$3'"; fi; }
# check DESC CMD...: ok when CMD succeeds; its output is shown on failure
check() { local d=$1; shift; if "$@" >"$E2E/check.out" 2>&1; then ok 0 "$d"; else ok 1 "$d"; sed 's/^/# /' "$E2E/check.out" | tail -40; fi; }
bail() { echo "Bail out! $*"; exit 1; }
done_testing() { echo "1..$n"; [ "$failed" -eq 0 ]; }

# The sandbox: kubesim, nine sshd nodes whose systemctl only records, and the site file.
e2e_up() {
  "$KS" up "$SIM" --fixture csm >"$E2E/up.log" 2>&1 || { sed 's/^/# /' "$E2E/up.log"; bail "kubesim up"; }
  export KUBECONFIG=$SIM/kubeconfig
  if [ "${E2E_NODES:-1}" = 1 ]; then
    bash "$ROOT/tests/lib/sshnodes.sh" up "$NODES" "$NODELIST" >"$E2E/nodes.log" 2>&1 ||
      { sed 's/^/# /' "$E2E/nodes.log"; bail "sshnodes up"; }
    printf '#!/bin/sh\necho "$*" >> "%s/systemctl.$PGR_NODE"\n' "$NODES" > "$NODES/bin/systemctl"
    chmod 755 "$NODES/bin/systemctl"
  fi
  write_site
  export PGR_SITE=$E2E/site.lua PGR_STATE_DIR=$STATE
}

write_site() {
  local s3="" kc_url=false kc_creds=nil
  [ -n "${KEYCLOAK_URL:-}" ] && kc_url="\"$KEYCLOAK_URL\""
  [ -n "${KEYCLOAK_CREDS:-}" ] && kc_creds="\"$KEYCLOAK_CREDS\""
  if [ -n "${S3_ENDPOINT:-}" ]; then
    s3="s3 = { endpoint = \"$S3_ENDPOINT\", region = \"$S3_REGION\",
           credentials = { access_key = \"$S3_ACCESS_KEY\", secret_key = \"$S3_SECRET_KEY\" } },"
  fi
  cat > "$E2E/site.lua" <<LUA
return {
  $s3
  nodes = "$NODELIST",
  ssh = { options = { "-F", "$NODES/ssh_config" }, timeout = 60 },
  commands = {
    spire_fix_storage = { "sh", "-c", "sleep ${E2E_CMD_DELAY:-0}; echo fixed >> $E2E/fix-storage" },
    spire_verify_jwt = { "sh", "-c", "sleep ${E2E_CMD_DELAY:-0}; echo called >> $E2E/jwt; echo eyJhbGciOiJSUzI1NiJ9.e2e-token-value" },
    hsm_verify = { "sh", "-c", "echo ready >> $E2E/hsm-verify" },
    hsm_rediscover = { "sh", "-c", "echo rediscover >> $E2E/hsm-rediscover" },
    sls_verify = { "sh", "-c", "echo ok >> $E2E/sls-verify" },
    vcs_verify = { "sh", "-c", "echo ok >> $E2E/vcs-verify" },
  },
  keycloak = { token_url = $kc_url, credentials_file = $kc_creds },
}
LUA
}

# site_without_nodes: the site file names no nodes and skips Spire's NCN fan-out (E2E_NODES=0 sandboxes)
site_without_nodes() {
  sed -i 's/^  nodes = .*$//; s/^  commands = {/  commands = { spire_restart_agent = false,/' "$E2E/site.lua"
}

# e2e_s3_up: a real S3 server (Ceph radosgw, tests/s3/rgw.sh) on 127.25.N.1 with the postgres-backup
# bucket; the site file points at it.
e2e_s3_up() {
  RGW_ADDR=127.25.$((RANDOM % 200 + 20)).1 "$ROOT/tests/s3/rgw.sh" start "$E2E/rgw" $$ >"$E2E/rgw.env" 2>"$E2E/rgw.log" ||
    { sed 's/^/# /' "$E2E/rgw.log" | tail -20; bail "radosgw did not start"; }
  set -a; . "$E2E/rgw.env"; set +a
  write_site
  "$PGR" -e 'local c = assert(require("pgr.s3").connect{}) assert(c:create_bucket("postgres-backup"))' ||
    bail "cannot create the bucket"
}

# s3_upload FILE...: into postgres-backup under the files' names
s3_upload() {
  local f
  for f in "$@"; do
    F=$f "$PGR" -e 'local c = assert(require("pgr.s3").connect{}) local f = os.getenv("F")
      assert(c:put_file("postgres-backup", f:match("[^/]+$"), f))' || bail "upload $f"
  done
}

cluster_json() { "$KS" admin "$SIM" "{\"op\":\"cluster\",\"cluster\":\"$1\"}"; }

# sql CLUSTER DB SQL: as postgres (the password in its secret) to the master's pod IP
sql() {
  local info host pw
  info=$(cluster_json "$1") || return 1
  host=$(jq -r .host <<<"$info") pw=$(jq -r .postgres_password <<<"$info")
  PGPASSWORD=$pw PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -A -t -q -h "$host" -U postgres -d "$2" -c "$3"
}

# socket_sql SOCKET_DIR DB SQL: as postgres over the server's unix socket (trusted: no password needed)
socket_sql() { PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -A -t -q -h "$1" -U postgres -d "$2" -c "$3"; }
socket_dir() { cluster_json "$1" | jq -r .socket_dir; }

# seq_values: a data-only dump with each sequence's value left out (its setval line kept). CSM's job
# dumps a streaming replica, where PostgreSQL shows a sequence up to 32 values ahead of the master (it
# WAL-logs them in advance): a restore of such a dump sets the sequences that far ahead, losing nothing.
seq_values() { sed -E 's/^(SELECT pg_catalog\.setval\(.*, )[0-9]+(, (true|false)\);)$/\1N\2/'; }

# fingerprint CLUSTER DB: a hash of the database's data (pg_dump --data-only, minus comments and keys)
fingerprint() {
  local info host pw
  info=$(cluster_json "$1") || return 1
  host=$(jq -r .host <<<"$info") pw=$(jq -r .postgres_password <<<"$info")
  PGPASSWORD=$pw PGCONNECT_TIMEOUT=5 "$PGBIN/pg_dump" -h "$host" -U postgres --data-only "$2" |
    grep -v -e '^--' -e '^\\restrict' -e '^\\unrestrict' | seq_values | sha256sum | cut -c1-16
}

# logins CLUSTER NS USER...: prints the users that log in with their secret's password
logins() {
  local cluster=$1 ns=$2 info host u pw
  shift 2
  info=$(cluster_json "$cluster") || return 1
  host=$(jq -r .host <<<"$info")
  for u in "$@"; do
    pw=$(kubectl get secret "${u//_/-}.$cluster.credentials" -n "$ns" -o jsonpath='{.data.password}' | base64 -d)
    if PGPASSWORD=$pw PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -Atq -h "$host" -U "$u" -d postgres -c 'select 1' >/dev/null 2>&1
    then printf '%s ' "$u"; fi
  done
  echo
}

replicas() { kubectl get "$1" "$2" -n "$3" -o jsonpath='{.spec.replicas}'; }
instances() { kubectl get postgresql "$1" -n "$2" -o jsonpath='{.spec.numberOfInstances}'; }
restarted_at() { kubectl get "$1" "$2" -n "$3" -o jsonpath='{.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}'; }

# backup CLUSTER [LAYOUT]: a backup as the field makes it (kubesim backup --layout): csm (default,
# the nightly job: pg_dumpall -c and a multi-document manifest), list (the HSM/SLS pages' hand-made
# one: --clean and a kind: List manifest) or operator (gzip'd, no manifest); sets DUMP and MANIFEST
backup() {
  local out
  out=$("$KS" backup "$SIM" "$1" "$BACKUP" --layout "${2:-csm}") || bail "kubesim backup $1"
  DUMP=$(sed -n 1p <<<"$out") MANIFEST=$(sed -n 2p <<<"$out")
}

# same_as_psql LABEL CLUSTER NS DUMP: restores DUMP the runbook's way (psql as postgres inside the
# pod, here over the pod's socket) into a fresh twin of CLUSTER, then compares pg_dumpall of both.
# What differs by nature is left out: the \restrict keys pg_dumpall makes up on each run. Nothing else.
# (TWIN_SQL applies to the twin what the procedure itself changes after the dump).
same_as_psql() {
  local label=$1 cluster=$2 ns=$3 dump=$4 twin=${2}-psql a b i cat=cat
  kubectl get postgresql "$cluster" -n "$ns" -o json |
    jq --arg n "$twin" '{apiVersion, kind, metadata: {name: $n, namespace: .metadata.namespace, labels: .metadata.labels},
                         spec: (.spec | .numberOfInstances = 1)}' | kubectl create -f - >/dev/null || { ok 1 "$label: twin"; return; }
  for i in $(seq 1 600); do
    [ "$(kubectl get postgresql "$twin" -n "$ns" -o jsonpath='{.status.PostgresClusterStatus}')" = Running ] && break
    sleep 0.1
  done
  case $dump in *.gz) cat="gzip -dc" ;; esac
  $cat "$dump" | PGCONNECT_TIMEOUT=10 "$PGBIN/psql" -X -q -h "$(socket_dir "$twin")" -U postgres -d postgres >"$E2E/twin.log" 2>&1
  # what the procedure itself changes after the dump (TWIN_SQL="db|sql"), e.g. HSM empties a table
  [ -n "${TWIN_SQL:-}" ] && socket_sql "$(socket_dir "$twin")" "${TWIN_SQL%%|*}" "${TWIN_SQL#*|}" >/dev/null
  # without a manifest (SAME_PASSWORDS=no) pgr sets each role's password from its secret: a new salted
  # verifier, a difference by nature; the logins are asserted on their own
  local strip='s/^$//'
  [ "${SAME_PASSWORDS:-yes}" = no ] && strip="s/ PASSWORD 'SCRAM-SHA-256[^']*'//"
  a=$("$PGBIN/pg_dumpall" -h "$(socket_dir "$cluster")" -U postgres | grep -v '^\\\(un\)\?restrict ' | sed "$strip")
  b=$("$PGBIN/pg_dumpall" -h "$(socket_dir "$twin")" -U postgres | grep -v '^\\\(un\)\?restrict ' | sed "$strip")
  if [ -n "$a" ] && [ "$a" = "$b" ]; then ok 0 "$label: pg_dumpall equals a psql restore of the same dump ($(grep -c ERROR "$E2E/twin.log") errors in psql's)"
  else ok 1 "$label: pg_dumpall equals a psql restore of the same dump"; diff <(echo "$a") <(echo "$b") | head -20 | sed 's/^/# /'; fi
  kubectl delete postgresql "$twin" -n "$ns" --wait=true >/dev/null
}

# s3_put FILE KEY: into postgres-backup under KEY
s3_put() {
  F=$1 K=$2 "$PGR" -e 'local c = assert(require("pgr.s3").connect{})
    assert(c:put_file("postgres-backup", os.getenv("K"), os.getenv("F")))' || bail "upload $2"
}

# step_no SERVICE NAME-PREFIX: the number `pgr plan` gives the step whose name starts with NAME-PREFIX
# (tests name steps, never hard-code their numbers: a step added elsewhere moves them)
step_no() {
  local n
  n=$("$PGR" plan "services/$1.lua" 2>/dev/null | awk -v p="$2" '
    match($0, /^ *[0-9]+\. /) { name = substr($0, RLENGTH + 1); if (index(name, p) == 1) { sub(/\..*/, "", $1); print $1; exit } }')
  [ -n "$n" ] || bail "no step of $1 starts with: $2"
  echo "$n"
}
step_count() { "$PGR" plan "services/$1.lua" 2>/dev/null | sed -n '1s/.*, \([0-9]*\) steps$/\1/p'; }
# step_tag SERVICE NAME-PREFIX: "[ N/M]" of that step as pgr run prints it, as a grep pattern
step_tag() { printf '\\[%2d/%d\\]' "$(step_no "$1" "$2")" "$(step_count "$1")"; }

# pgr_run ARGS...: pgr run with the sandbox's site and state; output in $E2E/out, status returned
pgr_run() {
  timeout 600 "$PGR" run "$@" >"$E2E/out" 2>&1
}
show_out() { sed 's/^/#   /' "$E2E/out" | tail -${1:-30}; }

# journal_has RUN_DIR EVENT STEP: whether the newest run's journal has that event for that step
newest_run() { ls -d "$STATE"/runs/* 2>/dev/null | sort | tail -1; }

# fingerprints CLUSTER DB...: one line of fingerprints (FP_EXCLUDE: pg_dump options, e.g. --exclude-table-data=x)
fingerprints() {
  local c=$1 db info host pw
  shift
  info=$(cluster_json "$c") || return 1
  host=$(jq -r .host <<<"$info") pw=$(jq -r .postgres_password <<<"$info")
  for db in "$@"; do
    PGPASSWORD=$pw PGCONNECT_TIMEOUT=5 "$PGBIN/pg_dump" -h "$host" -U postgres --data-only ${FP_EXCLUDE:-} "$db" |
      grep -v -e '^--' -e '^\\restrict' -e '^\\unrestrict' | seq_values | sha256sum | cut -c1-12 | tr '\n' ' '
  done
  echo
}

# restore_and_check LABEL SERVICE CLUSTER NS KIND CLIENT REPLICAS "USERS" "DBS" [pgr args...]:
# runs the restore and asserts what every service shares: exit 0, data, logins, scale.
restore_and_check() {
  local label=$1 svc=$2 cluster=$3 ns=$4 kind=$5 client=$6 want=$7 users=$8 dbs=$9 rc
  shift 9
  pgr_run "services/$svc.lua" "$@" --yes
  rc=$?
  is "$label: exits 0" "$rc" 0
  [ "$rc" = 0 ] || show_out 40
  # shellcheck disable=SC2086
  is "$label: the databases equal the backup" "$(fingerprints "$cluster" $dbs)" "$FP0"
  # shellcheck disable=SC2086
  is "$label: every secret's user logs in with its password" "$(logins "$cluster" "$ns" $users)" "$users "
  is "$label: $client is back at $want replicas" "$(replicas "$kind" "$client" "$ns")" "$want"
  is "$label: $cluster is back at 3 instances" "$(instances "$cluster" "$ns")" 3
  is "$label: both replicas stream from the master" \
     "$(cluster_json "$cluster" | jq -r '"\([.replicas[] | select(.streaming)] | length)/\(.replicas | length)"')" "2/2"
  is "$label: the run finished" "$(tail -1 "$(newest_run)/journal.jsonl" | jq -r .status)" ok
}
