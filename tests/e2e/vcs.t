#!/usr/bin/env bash
# tests/e2e/vcs.t — `pgr run services/vcs.lua` on the sandbox, with and without the manifest; the data
# goes into the cluster's master (not the gitea pod the runbook's exec line names); the PVC is checked.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
USERS="postgres service_account standby"
backup gitea-vcs-postgres
FP0=$(fingerprints gitea-vcs-postgres service_db)

sql gitea-vcs-postgres service_db 'DELETE FROM action; UPDATE "user" SET is_admin = false' || bail "break"
restore_and_check "vcs with the manifest" vcs gitea-vcs-postgres services deployment gitea-vcs 1 \
  "$USERS" service_db --dump "$DUMP" --manifest "$MANIFEST"
grep -q "Check the gitea-vcs-data-claim volume claim exists" "$E2E/out"; ok $? "the PVC prerequisite was checked"
is "the VCS verification ran" "$(cat "$E2E/vcs-verify" 2>/dev/null)" ok
same_as_psql "vcs" gitea-vcs-postgres services "$DUMP"

sql gitea-vcs-postgres service_db 'DELETE FROM repository' || bail "break again"
restore_and_check "vcs without a manifest" vcs gitea-vcs-postgres services deployment gitea-vcs 1 \
  "$USERS" service_db --dump "$DUMP"

kubectl delete pvc gitea-vcs-data-claim -n services --wait=true >/dev/null 2>&1
pgr_run services/vcs.lua --dump "$DUMP" --yes
is "without the gitea-vcs-data-claim PVC the run stops in preflight (exit 3)" "$?" 3
done_testing
