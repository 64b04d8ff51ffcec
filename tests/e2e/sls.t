#!/usr/bin/env bash
# tests/e2e/sls.t — `pgr run services/sls.lua` on the sandbox, with and without the manifest: in place
# (the postgresql object is never deleted), sls and service_db dropped and restored, connect re-granted.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
USERS="postgres service_account slsuser standby"
backup cray-sls-postgres
FP0=$(fingerprints cray-sls-postgres sls service_db)
uid0=$(kubectl get postgresql cray-sls-postgres -n services -o jsonpath='{.metadata.uid}')
job0=$(kubectl get job cray-sls-init-load -n services -o jsonpath='{.metadata.uid}')

sql cray-sls-postgres sls "DELETE FROM networks WHERE name <> 'NMN'; DELETE FROM components" || bail "break"
sql cray-sls-postgres service_db "DELETE FROM sls_dumpstate" || bail "break service_db"
restore_and_check "sls with the manifest" sls cray-sls-postgres services deployment cray-sls 3 \
  "$USERS" "sls service_db" --dump "$DUMP" --manifest "$MANIFEST"
is "the postgresql object was not deleted (same uid)" "$(kubectl get postgresql cray-sls-postgres -n services -o jsonpath='{.metadata.uid}')" "$uid0"
[ "$(kubectl get job cray-sls-init-load -n services -o jsonpath='{.metadata.uid}')" != "$job0" ]; ok $? "cray-sls-init-load was re-run"
is "public may connect to sls and service_db again" \
   "$(sql cray-sls-postgres postgres "SELECT bool_and(has_database_privilege('public', datname, 'CONNECT')) FROM pg_database WHERE datname IN ('sls', 'service_db')")" t
is "the SLS verification ran" "$(cat "$E2E/sls-verify" 2>/dev/null)" ok
same_as_psql "sls (in place)" cray-sls-postgres services "$DUMP"

sql cray-sls-postgres sls "DELETE FROM version_history" || bail "break again"
restore_and_check "sls without a manifest" sls cray-sls-postgres services deployment cray-sls 3 \
  "$USERS" "sls service_db" --dump "$DUMP"
done_testing
