#!/usr/bin/env bash
# tests/e2e/hsm.t — `pgr run services/hsm.lua` on the sandbox, with and without the manifest: the
# loader job re-run, comp_eth_interfaces emptied, every database pod restarted, the site's checks run.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
USERS="postgres service_account hmsdsuser standby"
# the HSM page's hand-made backup: pg_dumpall --clean in the leader, a kind: List manifest
backup cray-smd-postgres list
grep -q '^kind: List' "$MANIFEST"; ok $? "the manifest is kubectl's kind: List, as the HSM page makes it"
# the Ethernet interfaces are deleted by the procedure (rediscovery fills them): compared apart
export FP_EXCLUDE=--exclude-table-data=comp_eth_interfaces
FP0=$(fingerprints cray-smd-postgres hmsds)
job0=$(kubectl get job cray-smd-init -n services -o jsonpath='{.metadata.uid}')

sql cray-smd-postgres hmsds "DELETE FROM components WHERE type = 'NodeBMC'; UPDATE rf_endpoints SET enabled = false" || bail "break"
restore_and_check "hsm with the manifest" hsm cray-smd-postgres services deployment cray-smd 3 \
  "$USERS" hmsds --dump "$DUMP" --manifest "$MANIFEST"
is "comp_eth_interfaces is empty" "$(sql cray-smd-postgres hmsds "SELECT count(*) FROM comp_eth_interfaces")" 0
[ "$(kubectl get job cray-smd-init -n services -o jsonpath='{.metadata.uid}')" != "$job0" ]; ok $? "cray-smd-init was re-run"
grep -q "Restart the database pods and wait until they are ready" "$E2E/out"; ok $? "every database pod was restarted"
is "the HSM verification ran" "$(cat "$E2E/hsm-verify" 2>/dev/null)" ready
is "the rediscovery ran" "$(cat "$E2E/hsm-rediscover" 2>/dev/null)" rediscover
TWIN_SQL="hmsds|DELETE FROM comp_eth_interfaces" same_as_psql "hsm (List manifest)" cray-smd-postgres services "$DUMP"

sql cray-smd-postgres hmsds "DELETE FROM node_nid_mapping" || bail "break again"
restore_and_check "hsm without a manifest" hsm cray-smd-postgres services deployment cray-smd 3 \
  "$USERS" hmsds --dump "$DUMP"

# replace --force deletes the job before it creates it again: when the API refuses the create, the
# job is gone, and --resume re-creates it from the copy the step saved
sql cray-smd-postgres hmsds "DELETE FROM node_nid_mapping" || bail "break a third time"
"$KS" fault "$SIM" --path 'namespaces/services/jobs([?].*)?$' --method POST --code 500 --count -1 >/dev/null || bail fault
pgr_run services/hsm.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
is "a refused job create stops the run (exit 1)" "$?" 1
"$KS" admin "$SIM" '{"op":"clear_faults"}' >/dev/null
is "the job is gone from the cluster" "$(kubectl get job cray-smd-init -n services -o name 2>/dev/null)" ""
pgr_run services/hsm.lua --resume --yes; rc=$?
is "--resume re-creates the job from its saved copy and completes" "$rc" 0
[ "$rc" = 0 ] || show_out 20
is "cray-smd-init exists again and completed" \
   "$(kubectl get job cray-smd-init -n services -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}')" True
is "the hmsds database equals the backup" "$(fingerprints cray-smd-postgres hmsds)" "$FP0"
done_testing
