#!/usr/bin/env bash
# tests/e2e/drill.t — `pgr drill`: each of the five services passes on a good backup (`--all`, from S3,
# as cron runs it) and fails, naming the cause, on a truncated dump, a dump of another service and a
# manifest with a wrong password; the live clusters, their clients and secrets are unchanged through
# all of it (uids, resourceVersions, data); Ctrl-C, SIGTERM and kill -9 in the middle of a drill leave no
# scratch cluster once the next drill has run. One sandbox for everything.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
e2e_s3_up
site_without_nodes

# service|cluster|namespace|client kind|client|databases|the service whose dump is "another service's"
CASES=(
  "spire|spire-postgres|spire|statefulset|spire-server|spire|keycloak"
  "keycloak|keycloak-postgres|services|statefulset|cray-keycloak|service_db|vcs"
  "vcs|gitea-vcs-postgres|services|deployment|gitea-vcs|service_db|keycloak"
  "hsm|cray-smd-postgres|services|deployment|cray-smd|hmsds|sls"
  "sls|cray-sls-postgres|services|deployment|cray-sls|sls service_db|hsm"
)
declare -A DUMPS MANIFESTS
for c in "${CASES[@]}"; do
  IFS='|' read -r svc cluster _ <<<"$c"
  backup "$cluster"
  DUMPS[$svc]=$DUMP MANIFESTS[$svc]=$MANIFEST
  s3_upload "$DUMP" "$MANIFEST"
done

# What must not change: each live postgresql, its pods, secrets and client (uid, resourceVersion,
# generation), and the data of its databases.
live_state() {
  local c svc cluster ns kind client dbs
  for c in "${CASES[@]}"; do
    IFS='|' read -r svc cluster ns kind client dbs _ <<<"$c"
    echo "$svc: $(kubectl get postgresql "$cluster" -n "$ns" -o jsonpath='{.metadata.uid} {.metadata.resourceVersion}')"
    echo "  pods: $(kubectl get pods -n "$ns" -l "application=spilo,cluster-name=$cluster" -o jsonpath='{range .items[*]}{.metadata.uid}={.metadata.resourceVersion} {end}')"
    echo "  secrets: $(kubectl get secrets -n "$ns" -l "cluster-name=$cluster" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}/{.metadata.resourceVersion} {end}')"
    echo "  $client: $(kubectl get "$kind" "$client" -n "$ns" -o jsonpath='{.metadata.uid} {.metadata.resourceVersion} {.metadata.generation}')"
    # shellcheck disable=SC2086
    echo "  data: $(fingerprints "$cluster" $dbs)"
  done
}
# Anything of a scratch cluster, in any namespace
leftovers() {
  {
    kubectl get postgresql -A -o name
    kubectl get pods,secrets,persistentvolumeclaims -A -l 'application=spilo' -o name
  } 2>/dev/null | grep -c 'pgr-drill-'
}
drill() { timeout 600 "$PGR" drill "$@" >"$E2E/out" 2>&1; }
before=$(live_state)
grep -q "pods: [a-f0-9-]*=" <<<"$before" && grep -q "secrets: postgres" <<<"$before"
ok $? "the live state is read (pods, secrets, data)"

# 1. the newest backup of every service, from S3, as the weekly cron job runs it
timeout 900 "$PGR" drill --all --json >"$E2E/all.json" 2>"$E2E/out"
rc=$?
is "drill --all of good backups: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
is "five reports, each a pass" "$(jq -r 'select(.event == "drill_report") | .service + "=" + .result' "$E2E/all.json" | tr '\n' ' ')" \
  "spire=pass keycloak=pass vcs=pass hsm=pass sls=pass "
for c in "${CASES[@]}"; do
  IFS='|' read -r svc cluster _ <<<"$c"
  r=$(jq -c "select(.event == \"drill_report\" and .service == \"$svc\")" "$E2E/all.json")
  is "$svc: the report names the S3 backup" "$(jq -r .backup.name <<<"$r")" "$(basename "${DUMPS[$svc]}" .psql)"
  is "$svc: its age and size are reported" "$(jq -r '(.backup.age_seconds | type) + " " + (.backup.size > 0 | tostring)' <<<"$r")" "number true"
  is "$svc: six phases, each timed" "$(jq -r '[.phases[] | select(.ok and (.seconds | type) == "number")] | length' <<<"$r")" 6
  is "$svc: row counts and logins checked" \
    "$(jq -r '[.checks[] | select(.ok and (.name | test("row count|logs in")))] | length' <<<"$r")" 2
done
is "nothing of the scratch clusters is left" "$(leftovers)" 0

# the operator's logical backup (gzip'd, no manifest): the logins are checked as far as they can be
backup spire-postgres operator
drill spire --dump "$DUMP"
rc=$?
is "the operator's gzip'd backup without a manifest: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 20
grep -q "ok   each user logs in once its password is set (no manifest: the dump's passwords are not checked" "$E2E/out" &&
  grep -q "ok   every table's row count equals the dump's COPY count: [1-9][0-9]* tables" "$E2E/out"
ok $? "without a manifest the report says what the logins check instead; the row counts of the gzip'd dump match"

# 2. a truncated dump (a backup job that died half-way): refused before any scratch cluster is made
for c in "${CASES[@]}"; do
  IFS='|' read -r svc _ <<<"$c"
  head -c "$(( $(stat -c %s "${DUMPS[$svc]}") / 2 ))" "${DUMPS[$svc]}" > "$E2E/$svc-cut.psql"
  drill "$svc" --dump "$E2E/$svc-cut.psql" --manifest "${MANIFESTS[$svc]}"
  is "$svc, truncated dump: exit 1" "$?" 1
  grep -q "FAIL Find the backup and check it is complete: .*is truncated: pg_dumpall's completion trailer is missing" "$E2E/out" &&
    grep -q "skip Delete the scratch cluster.*no scratch cluster was made" "$E2E/out"
  ok $? "$svc, truncated dump: the report says so, and nothing was made"
done

# 3. a dump of another service, with this service's manifest
for c in "${CASES[@]}"; do
  IFS='|' read -r svc _ _ _ _ _ other <<<"$c"
  drill "$svc" --dump "${DUMPS[$other]}" --manifest "${MANIFESTS[$svc]}"
  is "$svc, $other's dump: exit 1" "$?" 1
  grep -q "FAIL the dump is of .*: is it a dump of another service?" "$E2E/out"
  rc=$?
  ok $rc "$svc, $other's dump: the report says it is another service's"
  [ $rc = 0 ] || show_out 12
done

# 4. a manifest whose service_account password is wrong: the restore goes through, the login fails
for c in "${CASES[@]}"; do
  IFS='|' read -r svc cluster _ <<<"$c"
  python3 - "${MANIFESTS[$svc]}" "$E2E/$svc-bad.manifest" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("\n---\n")
for i, d in enumerate(docs):
    if "name: service-account." in d:
        lines = d.split("\n")
        docs[i] = "\n".join("  password: d3JvbmctcGFzc3dvcmQ=" if l.startswith("  password: ") else l for l in lines)
open(sys.argv[2], "w").write("\n---\n".join(docs))
PY
  drill "$svc" --dump "${DUMPS[$svc]}" --manifest "$E2E/$svc-bad.manifest"
  rc=$?
  is "$svc, a wrong password in the manifest: exit 1" "$rc" 1
  grep -q "FAIL each user of the manifest logs in with the manifest's password: cannot log in: service_account (password authentication failed)$" "$E2E/out" &&
    grep -q "ok   every table's row count equals the dump's COPY count" "$E2E/out" &&
    grep -q "ok   Delete the scratch cluster" "$E2E/out"
  rc=$?
  ok $rc "$svc, a wrong password: service_account is named, the rows were right, the scratch cluster deleted"
  [ $rc = 0 ] || show_out 14
  grep -q "d3JvbmctcGFzc3dvcmQ=\|wrong-password" "$E2E/out"
  is "$svc: the password is not shown" "$?" 1
done
is "nothing of the scratch clusters is left" "$(leftovers)" 0

# 5. Ctrl-C in the middle of a drill: the scratch cluster is deleted on the way out
scratch_exists() { kubectl get postgresql pgr-drill-spire-postgres -n spire >/dev/null 2>&1; }
scratch_running() { [ "$(kubectl get pods -n spire -l application=spilo,cluster-name=pgr-drill-spire-postgres -o jsonpath='{.items[*].status.phase}' 2>/dev/null)" = Running ]; }
wait_for() { local i; for ((i = 0; i < 1200; i++)); do "$@" && return 0; kill -0 "$DPID" 2>/dev/null || return 1; sleep 0.05; done; return 1; }
# interrupt_drill WHAT SIGNAL STATUS: a drill of Spire under timeout(1), SIGNAL sent to timeout once
# the scratch cluster exists; the drill ends with STATUS, says INTERRUPTED and deletes it all
interrupt_drill() {
  local what=$1 sig=$2 want=$3 out=$E2E/$2.out rc
  timeout 3600 "$PGR" drill spire >"$out" 2>&1 &
  DPID=$!
  BG_PIDS+=("$DPID")
  wait_for scratch_exists; ok $? "$what: the drill made its scratch cluster"
  kill -"$sig" "$DPID"
  wait "$DPID"
  is "$what: exit $want" "$?" "$want"
  grep -q "INTERRUPTED" "$out" && grep -q "ok   Delete the scratch cluster" "$out"
  rc=$?
  ok $rc "$what: the report says interrupted, and the scratch cluster was deleted"
  [ $rc = 0 ] || sed 's/^/# /' "$out" | tail -30
  is "$what: nothing of the scratch cluster is left" "$(leftovers)" 0
}
# timeout passes Ctrl-C on to pgr and again to its process group: pgr gets it twice
interrupt_drill "Ctrl-C" INT 130
# 5b. a cron job's timeout(1) expiring in the middle of a drill (SIGTERM to pgr and its group; the
#     SIGALRM sent here is timeout's own timer firing now): the same clean-up; timeout exits 124
interrupt_drill "timeout expiring" ALRM 124

# 6. kill -9 once the scratch cluster runs: it stays behind, and the next drill removes it first
"$PGR" drill spire >"$E2E/kill.out" 2>&1 &
DPID=$!
BG_PIDS+=("$DPID")
wait_for scratch_running; ok $? "kill -9: the scratch cluster runs"
kill -9 "$DPID"
wait "$DPID" 2>/dev/null
scratch_exists; ok $? "kill -9: the scratch cluster is left behind"
drill spire
rc=$?
is "the next drill passes" "$rc" 0
[ "$rc" = 0 ] || show_out 30
grep -q "ok   Remove a scratch cluster an earlier drill left behind .*removed postgresql" "$E2E/out"
ok $? "it removed the leftover first"
grep -q "took over the lease of spire/spire-postgres from .*: its run used this state directory" "$E2E/out"
ok $? "it took the killed drill's lease at once (same state directory)"
is "kill -9: nothing of the scratch cluster is left after the next drill" "$(leftovers)" 0

after=$(live_state)
is "the live clusters, their pods, secrets, clients and data are unchanged by every drill" "$after" "$before"
[ "$after" = "$before" ] || diff <(echo "$before") <(echo "$after") | sed 's/^/# /' | head -20
is "the lease is free at the end" "$(kubectl get lease pgr-spire-postgres -n spire -o jsonpath='{.spec.holderIdentity}')" ""
done_testing
