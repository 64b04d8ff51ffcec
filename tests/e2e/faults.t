#!/usr/bin/env bash
# tests/e2e/faults.t — API faults injected into kubesim during `pgr run services/spire.lua`: bursts of
# 5xx and cut watches are survived; a fault that persists stops the run cleanly, and --resume finishes it.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
site_without_nodes # the fan-out step is not what is tested here
USERS="postgres service_account spire standby"
backup spire-postgres
fp0=$(fingerprint spire-postgres spire)

fault() { "$KS" fault "$SIM" "$@" >/dev/null || bail "fault $*"; }
left() { "$KS" admin "$SIM" '{"op":"faults"}' | jq '[.faults[].count] | add'; }

sql spire-postgres spire "DELETE FROM selectors" || bail "break"
fault --path 'postgresqls/spire-postgres' --code 503 --count 3 --retry-after 0
fault --path 'statefulsets/spire-server/scale' --code 500 --count 2
fault --kind cut_watch --path 'pods' --count 3 --after 1
pgr_run services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
rc=$?
is "bursts of 503/500 and cut watches are survived: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "every injected fault was hit (none left)" "$(left)" 0
is "the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
is "every secret's user logs in" "$(logins spire-postgres spire $USERS)" "$USERS "
"$KS" admin "$SIM" '{"op":"clear_faults"}' >/dev/null

sql spire-postgres spire "DELETE FROM selectors" || bail "break again"
# from the moment spire-server is scaled back, every scale request fails until the fault is cleared
fault --path 'statefulsets/spire-server/scale' --method PATCH --code 500 --count -1
pgr_run services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
rc=$?
is "a persistent 500 on the scale subresource stops the run: exit 1" "$rc" 1
grep -q "Scale spire-server to 0 and wait until its pods are gone" "$E2E/out" && grep -q "FAIL" "$E2E/out"
ok $? "the failing step is named"
grep -q "continue with: pgr run services/spire.lua --resume" "$E2E/out"; ok $? "the --resume command is printed"
is "spire-postgres was not touched (its step had not come)" "$(instances spire-postgres spire)" 3
run=$(newest_run)
is "the journal records the failed step" "$(jq -r 'select(.event == "step_failed") | .step' "$run/journal.jsonl")" "$(step_no spire "Scale spire-server to 0")"
"$KS" admin "$SIM" '{"op":"clear_faults"}' >/dev/null
pgr_run services/spire.lua --resume --yes
rc=$?
is "after the fault is cleared, --resume completes" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "the same run directory was finished" "$(tail -1 "$run/journal.jsonl" | jq -r .status)" ok
is "the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
is "spire-server is back at 3 replicas" "$(replicas statefulset spire-server spire)" 3

# a dump whose SQL fails in an unexpected way: the run stops after the stream, before any scale-out
sed 's/^\\connect spire$/&\nINSERT INTO no_such_table VALUES (1);/' "$DUMP" > "$E2E/bad.psql"
grep -q "no_such_table" "$E2E/bad.psql" || bail "could not plant the bad statement"
pgr_run services/spire.lua --dump "$E2E/bad.psql" --manifest "$MANIFEST" --yes --new
is "an unexpected SQL error in the dump: exit 1" "$?" 1
grep -q 'unexpected error(s) restoring .*relation "no_such_table" does not exist' "$E2E/out"
ok $? "the error is named with its dump line"
is "spire-server stays scaled to 0" "$(replicas statefulset spire-server spire)" 0
is "spire-postgres stays at one instance" "$(instances spire-postgres spire)" 1
grep -q "UNEXPECTED 42P01" "$(newest_run)/log"; ok $? "the run's log lists the unexpected error"
# (over the pod's socket: the dump has set postgres's password to the backup's, not the new secret's)
is "the loader role left behind cannot log in" \
   "$(socket_sql "$(socket_dir spire-postgres)" postgres "SELECT rolcanlogin FROM pg_roles WHERE rolname LIKE 'pgr\_restore%'")" f
# starting over with a good dump: the counts restored are those recorded before the failed run's changes
pgr_run services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes --new
is "--new with the good dump: exit 0" "$?" 0
is "spire-server is back at 3 replicas, as before the failed run" "$(replicas statefulset spire-server spire)" 3
is "spire-postgres is back at 3 instances, as before the failed run" "$(instances spire-postgres spire)" 3
is "the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
done_testing
