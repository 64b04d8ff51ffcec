#!/usr/bin/env bash
# tests/e2e/spire_new.t — `pgr run --new` after a run killed half-way (pgr offers it: "continue it with
# --resume (or start over with --new)"): the new run takes over the killed run's record of the cluster
# before it changed anything, so the counts it restores are the original ones, not the half-restored
# cluster's; and a postgresql the killed run had deleted is created again from the killed run's copy.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
site_without_nodes # the fan-out step is not what is tested here
USERS="postgres service_account spire standby"
backup spire-postgres
fp0=$(fingerprint spire-postgres spire)
args=(--dump "$DUMP" --manifest "$MANIFEST" --yes)
# killed_at N: pgr run dies of SIGKILL as it journals the start of step N
killed_at() { ( PGR_TEST_KILL_AT=$1 timeout 600 "$PGR" run services/spire.lua "${args[@]}" >"$E2E/out" 2>&1 & wait $! ) 2>/dev/null; }
# the status the newest-but-one run ended with (the killed one, once --new made a newer one)
killed_status() {
  ls -d "$STATE"/runs/* | sort | tail -2 | head -1 | xargs -I{} jq -r 'select(.event == "run_finished") | .status' {}/journal.jsonl
}

# A killed run that changed nothing yet (step 3 is a check) leaves nothing to take over
killed_at 3; is "A: killed during the checks" "$?" 137
sql spire-postgres spire "DELETE FROM selectors" || bail "break"
pgr_run services/spire.lua "${args[@]}" --new; rc=$?
is "A: --new completes" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "A: nothing was taken over from a run that changed nothing" "$(grep -c 'had already changed' "$E2E/out")" 0
is "A: the killed run is closed as abandoned" "$(killed_status)" abandoned

# B killed as the dump stream starts: spire-server is at 0 and the cluster at 1 instance
killed_at "$(step_no spire "Stream the dump")"; is "B: killed as the stream starts" "$?" 137
is "B: spire-server is left at 0 replicas" "$(replicas statefulset spire-server spire)" 0
is "B: spire-postgres is left at 1 instance" "$(instances spire-postgres spire)" 1
pgr_run services/spire.lua "${args[@]}" --new; rc=$?
is "B: --new completes" "$rc" 0
[ "$rc" = 0 ] || show_out 30
check "B: it says what it took over" grep -q "had already changed spire/spire-postgres: this run keeps what it recorded before that (client_replicas = 3, instances = 3, safety_backup, way_back, postgresql.json, secrets.json)" "$E2E/out"
is "B: spire-postgres is back at 3 instances" "$(instances spire-postgres spire)" 3
is "B: spire-server is back at 3 replicas" "$(replicas statefulset spire-server spire)" 3
is "B: the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
is "B: the killed run is closed as abandoned" "$(killed_status)" abandoned
# the way back stays the killed run's: a new safety backup would hold the half-restored cluster
killed_state() { ls -d "$STATE"/runs/* | sort | tail -2 | head -1 | xargs -I{} jq -r "$1" {}/state.json; }
is "B: the new run keeps the killed run's safety backup as its way back" \
   "$(jq -r .safety_backup.url "$(newest_run)/state.json")" "$(killed_state .safety_backup.url)"
grep -q "the data as it was before this run can be restored with: pgr run services/spire.lua --dump $(killed_state '.way_back[1]') " "$E2E/out"
ok $? "B: its last lines print that way back"

# C killed after the postgresql was deleted (as its re-creation starts): the only copy of
# the object is in the killed run; --new passes its checks with it and creates the cluster again
killed_at "$(step_no spire "Create the postgresql")"; is "C: killed after the delete" "$?" 137
is "C: the postgresql is gone" "$(kubectl get postgresql -n spire -o name 2>/dev/null | grep -c spire-postgres)" 0
pgr_run services/spire.lua "${args[@]}" --new; rc=$?
is "C: --new completes (its checks accept the gone cluster it can re-create)" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "C: spire-postgres is back at 3 instances" "$(instances spire-postgres spire)" 3
is "C: spire-server is back at 3 replicas" "$(replicas statefulset spire-server spire)" 3
is "C: the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
is "C: every secret's user logs in" "$(logins spire-postgres spire $USERS)" "$USERS "
done_testing
