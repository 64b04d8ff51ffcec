#!/usr/bin/env bash
# tests/e2e/status.t — pgr status on the sandbox: every service healthy on a fresh one; then a replica
# that does not stream, a secret whose password no longer logs in, a client scaled to 0, a run killed
# half-way, a truncated and a stale backup — each named by its service's verdict and reasons, with the
# documented exit codes; --json carries the same facts; no password appears in any output.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
e2e_s3_up
site_without_nodes
OUT=$E2E/status
mkdir -p "$OUT"

# status NAME ARGS...: pgr status ARGS; stdout in $OUT/NAME.out, stderr in $OUT/NAME.err; sets RC
status() {
  local name=$1
  shift
  timeout 120 "$PGR" status "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  RC=$?
}
show() { sed 's/^/#   /' "$OUT/$1.out" | head -${2:-40}; sed 's/^/#   err: /' "$OUT/$1.err" | head -10; }
# jqs NAME FILTER: jq -r on $OUT/NAME.out
jqs() { jq -r "$2" "$OUT/$1.out"; }
utc() { date -u -d "$1" +%Y-%m-%dT%H:%M:%S; }

# The sandbox's replicas may be simulated without a server (kubesim before real standbys): then each
# cluster runs its master alone, which is a healthy cluster; replicas are judged below.
simulated_replicas() {
  kubectl get pods -A -l application=spilo,spilo-role=replica -o json |
    jq -e '[.items[].metadata.annotations["kubesim.pgr/postgres"] // empty] | length > 0' >/dev/null
}
instances_ready() { # CLUSTER NS N: N database pods Running and Ready
  [ "$(kubectl get pods -n "$2" -l "cluster-name=$1" -o json |
       jq '[.items[] | select(.metadata.deletionTimestamp == null) | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length')" = "$3" ]
}
wait_for() { local i; for ((i = 0; i < 600; i++)); do "$@" && return 0; sleep 0.1; done; return 1; }
CLUSTERS="spire/spire-postgres services/keycloak-postgres services/gitea-vcs-postgres services/cray-smd-postgres services/cray-sls-postgres"
SIMULATED=no
if simulated_replicas; then
  SIMULATED=yes
  for c in $CLUSTERS; do
    kubectl patch postgresql "${c#*/}" -n "${c%/*}" --type=merge -p '{"spec":{"numberOfInstances":1}}' >/dev/null
  done
  for c in $CLUSTERS; do wait_for instances_ready "${c#*/}" "${c%/*}" 1 || bail "${c#*/} did not go to 1 instance"; done
  # the operator's status returns to Running once the resize is done
  for c in $CLUSTERS; do
    wait_for sh -c "[ \"\$(kubectl get postgresql ${c#*/} -n ${c%/*} -o jsonpath='{.status.PostgresClusterStatus}')\" = Running ]" ||
      bail "${c#*/} is not Running"
  done
fi
echo "# replicas simulated without a server: $SIMULATED"

# Every service's nightly backup, fresh, in S3
for c in $CLUSTERS; do
  "$KS" backup "$SIM" "${c#*/}" "$BACKUP" --timestamp "$(utc '-20 min')" >"$E2E/b.out" || bail "backup ${c#*/}"
  s3_upload $(cat "$E2E/b.out")
done

# --- a fresh sandbox: all healthy ----------------------------------------------------------------
status all --all
is "pgr status --all on a fresh sandbox exits 0" "$RC" 0
[ "$RC" = 0 ] || show all 80
is "every service is HEALTHY" "$(grep -cE '^[a-z]+ \([a-z-]+/[a-z-]+\): HEALTHY$' "$OUT/all.out")" 5
grep -q "^5 services: 5 healthy — HEALTHY in " "$OUT/all.out"; ok $? "the summary line says so"
grep -q "^  logins      postgres ok, service_account ok, spire ok, standby ok$" "$OUT/all.out"
ok $? "spire's users all log in with their secrets' passwords"
grep -q "^  client      statefulset spire-server 3/3 ready$" "$OUT/all.out"; ok $? "spire-server: 3/3 ready"
grep -q "^  dependants  daemonset spire-agent 3/3 ready, deployment spire-jwks 3/3 ready$" "$OUT/all.out"
ok $? "Spire's dependants are shown"
grep -qE "^  backups     newest spire-postgres-[0-9T:-]+ \[csm\], (19|20|21) min old, [0-9.]+ [KM]iB, complete$" "$OUT/all.out"
ok $? "spire's newest backup: its age, size, complete"
status json --all --json
is "--json exits 0 too" "$RC" 0
is "--json: five healthy services" "$(jqs json '[.services[] | select(.verdict == "healthy")] | length') $(jqs json .verdict)" "5 healthy"
is "--json: the trailer of each newest backup was read and found" "$(jqs json '[.services[].backups.newest.trailer] | unique | @csv')" "true"
is "--json: the master of each cluster answers" "$(jqs json '[.services[].master_reachable] | unique | @csv')" "true"
is "--json: spire's databases and their sizes" "$(jqs json '.services[0].databases | map(select(.bytes > 0) | .name) | join(" ")')" "postgres spire"
is "--json: keycloak's dependants (jobs complete, proxies ready)" \
   "$(jqs json '.services[1].dependants | map(if .kind == "job" then .complete else .ready == .desired end) | unique | @csv')" "true"

# --- a replica that does not stream --------------------------------------------------------------
if [ "$SIMULATED" = yes ]; then
  # a replica pod without a server: what a stopped replica looks like from outside
  kubectl patch postgresql spire-postgres -n spire --type=merge -p '{"spec":{"numberOfInstances":2}}' >/dev/null
  wait_for instances_ready spire-postgres spire 2 || bail "no second spire pod"
  REPLICA=spire-postgres-1
else
  # a real standby restarted with a standby password its master does not know: it cannot stream
  # (a killed server would be restarted by Patroni within seconds)
  REPLICA=$(kubectl get pods -n spire -l cluster-name=spire-postgres,spilo-role=replica -o jsonpath='{.items[0].metadata.name}')
  kubectl patch secret standby.spire-postgres.credentials -n spire --type=merge \
    -p "{\"data\":{\"password\":\"$(head -c 18 /dev/urandom | base64 -w0)\"}}" >/dev/null
  kubectl delete pod "$REPLICA" -n spire --wait=true >/dev/null
fi
replica_named() { status replica spire; [ "$RC" = 1 ] && grep -q "replica $REPLICA is not streaming from the master" "$OUT/replica.out"; }
wait_for replica_named; ok $? "a replica that does not stream: spire is degraded (exit 1) and the reason names $REPLICA"
[ "$RC" = 1 ] || show replica
grep -q "^spire (spire/spire-postgres): DEGRADED$" "$OUT/replica.out"; ok $? "the verdict line says DEGRADED"

# --- a secret whose password does not log in ----------------------------------------------------
NEWPW=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
kubectl patch secret service-account.gitea-vcs-postgres.credentials -n services --type=merge \
  -p "{\"data\":{\"password\":\"$(printf %s "$NEWPW" | base64 -w0)\"}}" >/dev/null || bail "patch the vcs secret"
status vcs vcs
is "a broken secret: vcs exits 1" "$RC" 1
grep -q "^  - degraded: user service_account cannot log in with the password in secret service-account.gitea-vcs-postgres.credentials (auth_failed)$" "$OUT/vcs.out"
ok $? "the reason names the user, its secret and the failure class"
[ "$RC" = 1 ] || show vcs

# --- the client scaled to 0 ----------------------------------------------------------------------
kubectl scale deployment cray-sls -n services --replicas=0 >/dev/null
status sls sls
is "the client scaled to 0: sls is down (exit 2)" "$RC" 2
grep -q "^  - down: deployment cray-sls is scaled to 0 (kubectl scale deployment cray-sls -n services --replicas=N)$" "$OUT/sls.out"
ok $? "the reason names the deployment and the line that scales it back"

# --- a run killed half-way -----------------------------------------------------------------------
backup keycloak-postgres
STEP=$("$PGR" plan services/keycloak.lua | sed -n 's/^ *\([0-9]*\)\. Scale cray-keycloak to 0 .*/\1/p')
STEPS=$("$PGR" plan services/keycloak.lua | sed -n 's/.*, \([0-9]*\) steps$/\1/p')
# (braces: the shell's "Killed" report stays out of the TAP stream)
{ PGR_TEST_KILL_AT=$STEP timeout 300 "$PGR" run services/keycloak.lua --dump "$DUMP" --manifest "$MANIFEST" --yes >"$E2E/run.out" 2>&1; } 2>/dev/null
is "pgr run keycloak was killed as step $STEP started" "$?" 137
status keycloak keycloak
is "a run killed half-way: keycloak is degraded (exit 1)" "$RC" 1
grep -qF "a pgr run of keycloak stopped half-way at step $STEP/$STEPS (Scale cray-keycloak to 0 and wait until its pods are gone); continue with: pgr run keycloak --resume" "$OUT/keycloak.out"
ok $? "the reason names the step and the --resume line"
[ "$RC" = 1 ] || show keycloak

# --- backups: truncated, stale ------------------------------------------------------------------
# a newer spire backup whose dump was cut (its manifest present): complete as a pair, truncated inside
T=$(utc '-5 min')
"$KS" backup "$SIM" spire-postgres "$BACKUP/cut" --timestamp "$T" --truncate 4000 >"$E2E/b.out" || bail "truncated backup"
cp "$(ls "$BACKUP"/spire-postgres-*.manifest | head -1)" "$BACKUP/cut/spire-postgres-$T.manifest"
s3_upload "$BACKUP/cut/spire-postgres-$T.psql" "$BACKUP/cut/spire-postgres-$T.manifest"
# HSM's newest backup three days old, against its CronJob's schedule (10 */8 * * *)
OLD=$(utc '-3 days')
"$KS" backup "$SIM" cray-smd-postgres "$BACKUP/old" --timestamp "$OLD" >"$E2E/b.out" || bail "old backup"
# the fresh one goes, as the job's retention would have it the other way round
"$PGR" -e 'local c = assert(require("pgr.s3").connect{})
  for _, o in ipairs(assert(c:list("postgres-backup", { prefix = "cray-smd-postgres-" }))) do assert(c:delete("postgres-backup", o.key)) end'
s3_upload $(cat "$E2E/b.out")
status backups spire hsm --json
is "--json: spire's newest backup is the cut one, its trailer missing" \
   "$(jqs backups '.services[0].backups.newest | "\(.name) \(.complete) \(.trailer)"')" "spire-postgres-$T true false"
status backups_text spire hsm
grep -q "^  ! the newest backup spire-postgres-$T is truncated: pg_dumpall's completion trailer is missing$" "$OUT/backups_text.out"
ok $? "the screen warns of the truncated backup"
grep -qE "^  ! the newest backup cray-smd-postgres-$OLD is older than its schedule \"10 \*/8 \* \* \*\" \(cray-smd-postgresql-db-backup\) says: one was due at " "$OUT/backups_text.out"
ok $? "the screen warns of HSM's backup older than its CronJob's schedule"
grep -q "^hsm (services/cray-smd-postgres): HEALTHY$" "$OUT/backups_text.out"; ok $? "a warning alone leaves hsm HEALTHY"

# --- all at once, and --json carries the same ----------------------------------------------------
status all2 --all
is "--all with one service down exits 2" "$RC" 2
grep -q "^5 services: 1 healthy, 3 degraded (spire, keycloak, vcs), 1 down (sls) — DOWN in " "$OUT/all2.out"
ok $? "the summary names each service by its verdict"
[ "$RC" = 2 ] || show all2 100
status all2json --all --json
is "--all --json exits 2 as well" "$RC" 2
is "--json: the verdict of each service" "$(jqs all2json '[.services[] | "\(.service)=\(.verdict)"] | join(" ")')" \
   "spire=degraded keycloak=degraded vcs=degraded hsm=healthy sls=down"
same=yes
for svc in spire keycloak vcs hsm sls; do
  while IFS= read -r m; do
    grep -qF -- "$m" "$OUT/all2.out" || { same=no; echo "# not on the screen: $m"; }
  done < <(jqs all2json ".services[] | select(.service == \"$svc\") | .reasons[].message")
done
is "--json's reasons are the screen's, word for word" "$same" yes
is "--json: the stopped run's resume line" "$(jqs all2json '.services[1].runs[0].resume')" "pgr run keycloak --resume"
is "--json: vcs's service_account login failed, auth_failed" \
   "$(jqs all2json '.services[2].secrets[] | select(.user == "service_account") | "\(.login) \(.error)"')" "false auth_failed"
is "--json: cray-sls desired/ready" "$(jqs all2json '.services[4].client | "\(.desired)/\(.ready)"')" "0/0"

# --- another machine's run that died holding the cluster's lease ---------------------------------
kubectl apply -f - >/dev/null <<EOF || bail "lease"
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: pgr-cray-smd-postgres
  namespace: services
  annotations: { pgr/command: run }
spec:
  holderIdentity: root@ncn-m002 pid 4242 run services_cray-smd-postgres-20240101T000000.000-4242
  leaseDurationSeconds: 300
  renewTime: "$(date -u -d '-10 min' +%Y-%m-%dT%H:%M:%S.000000Z)"
EOF
status lease hsm
is "a run that died on another machine holding the lease: hsm is degraded" "$RC" 1
grep -qF "pgr run of root@ncn-m002 pid 4242 run services_cray-smd-postgres-20240101T000000.000-4242 stopped without releasing the lease pgr-cray-smd-postgres (last renewed " "$OUT/lease.out" &&
  grep -qF "; continue it on ncn-m002: pgr run hsm --resume" "$OUT/lease.out"
ok $? "the reason names the holder, the lease and where to resume"
[ "$RC" = 1 ] || show lease

# --- bad usage: exit 2, but nothing on stdout ----------------------------------------------------
status usage --no-such-flag
is "a bad command line exits 2" "$RC" 2
is "and prints nothing on stdout" "$(wc -c <"$OUT/usage.out")" 0
grep -q "^Usage: pgr status" "$OUT/usage.err"; ok $? "the usage is on stderr"
status usage2 nosuchservice
is "an unknown service is bad usage too" "$RC:$(wc -c <"$OUT/usage2.out")" "2:0"

# --- no password in any output ------------------------------------------------------------------
leaks=0
while IFS= read -r pw; do
  [ -n "$pw" ] || continue
  if grep -rqF -- "$pw" "$OUT"; then leaks=$((leaks + 1)); fi
done < <(kubectl get secrets -A -o json | jq -r '.items[] | select(.metadata.name | endswith(".credentials")) | .data.password' |
         while read -r b; do printf '%s' "$b" | base64 -d; echo; done; echo "$NEWPW"; echo "$S3_SECRET_KEY")
is "no password, and not the S3 secret key, appears in any output" "$leaks" 0
done_testing
