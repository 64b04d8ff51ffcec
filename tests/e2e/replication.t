#!/usr/bin/env bash
# tests/e2e/replication.t — pgr checks what it restored works, on the sandbox's real replicas:
#  - Spire and SLS, a manifest whose standby password is not the dump's standby role's: the run stops at
#    the login verification, before any replica is made, naming the cause and what to do; done as it
#    says, --resume finishes with every replica streaming;
#  - Spire, the standby role changed after that verification: the run fails at the replication check,
#    naming the cause (the standby password, pg_basebackup's error from the replicas' log) and what to do;
#  - Spire and SLS with the operator's readiness probe on (Ready = PostgreSQL accepts connections);
#  - an operator sync racing the restore: it cannot log in while the dump's postgres password is in and
#    the secrets are not yet (SyncFailed, retried only after repair_period); pgr detects it, checks that
#    postgres logs in with its secret's password again (what the next sync uses), and goes on; the
#    scale-out's update sets Running again.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
site_without_nodes

# wrong_standby IN OUT: the manifest with another password in the standby secret
wrong_standby() {
  python3 - "$1" "$2" <<'PY'
import base64, re, sys
docs = open(sys.argv[1]).read().split("---\n")
out = []
for d in docs:
    if re.search(r"^  name: standby\.", d, re.M):
        d = re.sub(r"^  password: .*$", "  password: " + base64.b64encode(b"not-the-dump-standby").decode(), d, flags=re.M)
    out.append(d)
open(sys.argv[2], "w").write("---\n".join(out))
PY
}
streaming() { cluster_json "$1" | jq -r '"\([.replicas[] | select(.streaming)] | length)/\(.replicas | length)"'; }
secret_pw() { kubectl get secret "$1" -n "$2" -o jsonpath='{.data.password}' | base64 -d; }
status() { kubectl get postgresql "$1" -n "$2" -o jsonpath='{.status.PostgresClusterStatus}'; }
failed_step() { jq -r 'select(.event == "step_failed") | .step' "$(newest_run)/journal.jsonl"; }
# fix_standby CLUSTER NS: what the failed check says to do: the role gets its secret's password, the
# replica pods start again
fix_standby() {
  sql "$1" postgres "ALTER ROLE standby PASSWORD '$(secret_pw "standby.$1.credentials" "$2")'" >/dev/null || bail "alter standby"
  kubectl delete pod -n "$2" "$1-1" "$1-2" >/dev/null || bail "delete replicas"
}

# ---------------------------------------------------------------- Spire: the standby password differs
# The manifest's standby secret is not the dump's standby role: pgr finds it when it verifies the
# logins, before the master restarts and the cluster scales out (replicas would log in with the secret's).
backup spire-postgres
fp_spire=$(fingerprint spire-postgres spire)
wrong_standby "$MANIFEST" "$E2E/spire-wrong.manifest"
sql spire-postgres spire "DELETE FROM selectors" || bail "break spire"
pgr_run services/spire.lua --dump "$DUMP" --manifest "$E2E/spire-wrong.manifest" --yes
rc=$?
is "spire, standby password not the dump's: exit 1" "$rc" 1
[ "$rc" = 1 ] || show_out 30
is "...the run stops at the login verification, before the scale-out" "$(failed_step)" "$(step_no spire "Verify every user")"
grep -q "The standby role's password in the database is not the one in secret standby.spire-postgres.credentials, which the replicas log in with" "$E2E/out"
ok $? "...the cause is named: the standby password"
grep -q "ALTER ROLE standby PASSWORD '<the password in standby.spire-postgres.credentials>'" "$E2E/out"; ok $? "...and what to do"
grep -q "continue with: pgr run services/spire.lua --resume" "$E2E/out"; ok $? "...and how to continue"
! grep -q "not-the-dump-standby" "$E2E/out" "$(newest_run)/journal.jsonl" "$(newest_run)/log"; ok $? "...and no password is shown"
is "...the data was restored" "$(fingerprint spire-postgres spire)" "$fp_spire"
sql spire-postgres postgres "ALTER ROLE standby PASSWORD '$(secret_pw standby.spire-postgres.credentials spire)'" >/dev/null
pgr_run services/spire.lua --resume --yes
rc=$?
is "done as it says, --resume finishes: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "...every replica streams" "$(streaming spire-postgres)" "2/2"
grep -q "2 replicas stream from spire-postgres-0" "$E2E/out"; ok $? "...as the replication check reports"

# The role's password drifts after that verification (killed as the scale-out starts, changed behind
# pgr's back): the replicas' base backups fail and the replication check names the cause from their log.
sql spire-postgres spire "DELETE FROM selectors" || bail "break spire"
( PGR_TEST_KILL_AT=$(step_no spire "Scale the cluster back") timeout 600 "$PGR" run services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes >"$E2E/out" 2>&1 & wait $! ) 2>/dev/null
is "a run killed as the scale-out starts" "$?" 137
sql spire-postgres postgres "ALTER ROLE standby PASSWORD 'drifted-away'" >/dev/null || bail "drift"
pgr_run services/spire.lua --resume --yes
rc=$?
is "--resume with the standby role changed: exit 1" "$rc" 1
[ "$rc" = 1 ] || show_out 30
is "...the run fails at the replication check" "$(failed_step)" "$(step_no spire "Check every replica streams")"
grep -q "the standby role's password in the database is not the one in secret standby.spire-postgres.credentials" "$E2E/out"
ok $? "...the cause is named: the standby password"
grep -qF 'pg_basebackup: error: connection to server at' "$E2E/out" && grep -qF 'password authentication failed for user "standby"' "$E2E/out"
ok $? "...with the replicas' own error, from their log"
grep -q "kubectl delete pod -n spire spire-postgres-1 spire-postgres-2" "$E2E/out"; ok $? "...and what to do"
! grep -q "drifted-away" "$E2E/out" "$(newest_run)/journal.jsonl" "$(newest_run)/log"; ok $? "...and no password is shown"
is "...no replica streams" "$(streaming spire-postgres)" "0/2"
fix_standby spire-postgres spire
pgr_run services/spire.lua --resume --yes
rc=$?
is "done as it says, --resume finishes: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "...every replica streams" "$(streaming spire-postgres)" "2/2"
is "...the data equals the backup" "$(fingerprint spire-postgres spire)" "$fp_spire"

# ---------------------------------------------------------------- Spire: readiness probe on, a racing sync
# The operator's sync every second (its default is 30 min) and its repair scan only every 10 min.
kubectl patch configmap postgres-operator -n services --type merge \
  -p '{"data":{"enable_readiness_probe":"true","resync_period":"1s","repair_period":"10m"}}' >/dev/null || bail "patch"
sql spire-postgres spire "TRUNCATE selectors, registered_entries CASCADE" || bail "break spire again"
# killed as the secrets step starts: the dump's postgres password is in, the new secrets are not
( PGR_TEST_KILL_AT=$(step_no spire "Update or re-create") timeout 600 "$PGR" run services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes >"$E2E/out" 2>&1 & wait $! ) 2>/dev/null
is "a run killed as the secrets step starts" "$?" 137
deadline=$((SECONDS + 60))
until [ "$(status spire-postgres spire)" = SyncFailed ] || [ $SECONDS -ge $deadline ]; do sleep 0.5; done
is "...the operator's sync cannot log in meanwhile: SyncFailed" "$(status spire-postgres spire)" SyncFailed
grep -q "spire.spire-postgres error while syncing cluster state: could not init db connection" "$SIM/kubesim.log"
ok $? "...as the operator logs"
# The SyncFailed must still stand when the resumed run looks: no more syncs every second (a sync after
# the resumed secrets step would set Running first, and pgr would have nothing to detect). A failed
# sync schedules the next one min(repair, resync) ahead: once one more has failed after this patch,
# none runs for 10 min but the one the scale-out's update starts.
failed_syncs() { grep -c "spire.spire-postgres error while syncing cluster state" "$SIM/kubesim.log"; }
n=$(failed_syncs)
kubectl patch configmap postgres-operator -n services --type merge -p '{"data":{"resync_period":"30m"}}' >/dev/null ||
  bail "patch"
deadline=$((SECONDS + 60))
until [ "$(failed_syncs)" -gt "$n" ] || [ $SECONDS -ge $deadline ]; do sleep 0.3; done
pgr_run services/spire.lua --resume --yes
rc=$?
is "--resume with the sync's SyncFailed standing: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
grep -q "the operator's status is SyncFailed" "$E2E/out"; ok $? "...pgr detected the failed sync and said so"
is "...the scale-out's update set Running again" "$(status spire-postgres spire)" Running
is "...the data equals the backup" "$(fingerprint spire-postgres spire)" "$fp_spire"
is "...every secret's user logs in" "$(logins spire-postgres spire postgres service_account spire standby)" "postgres service_account spire standby "
is "...every replica streams" "$(streaming spire-postgres)" "2/2"
is "...its 3 pods are Ready (with the probe: their servers run)" \
   "$(kubectl get pods -n spire -l application=spilo,cluster-name=spire-postgres -o json |
      jq '[.items[] | select(.status.conditions[]? | .type == "Ready" and .status == "True")] | length')" 3
kubectl patch configmap postgres-operator -n services --type merge \
  -p '{"data":{"resync_period":"30m","repair_period":"5m"}}' >/dev/null

# ---------------------------------------------------------------- SLS (in place): the same, probe still on
backup cray-sls-postgres
FP0=$(fingerprints cray-sls-postgres sls service_db)
wrong_standby "$MANIFEST" "$E2E/sls-wrong.manifest"
sql cray-sls-postgres sls "DELETE FROM components" || bail "break sls"
pgr_run services/sls.lua --dump "$DUMP" --manifest "$E2E/sls-wrong.manifest" --yes
is "sls, standby password not the dump's: exit 1" "$?" 1
grep -q "The standby role's password in the database is not the one in secret standby.cray-sls-postgres.credentials" "$E2E/out"
ok $? "...the cause is named: the standby password"
sql cray-sls-postgres postgres "ALTER ROLE standby PASSWORD '$(secret_pw standby.cray-sls-postgres.credentials services)'" >/dev/null
pgr_run services/sls.lua --resume --yes
is "done as it says, --resume finishes: exit 0" "$?" 0
is "...every replica streams" "$(streaming cray-sls-postgres)" "2/2"
is "...the databases equal the backup" "$(fingerprints cray-sls-postgres sls service_db)" "$FP0"

# SLS with the right manifest and the probe on
sql cray-sls-postgres sls "DELETE FROM networks" || bail "break sls again"
restore_and_check "sls, readiness probe on" sls cray-sls-postgres services deployment cray-sls 3 \
  "postgres service_account slsuser standby" "sls service_db" --dump "$DUMP" --manifest "$MANIFEST"
done_testing
