#!/usr/bin/env bash
# tests/e2e/keycloak.t — `pgr run services/keycloak.lua` on the sandbox, with and without the manifest:
# data, logins, scale, and Keycloak's own steps (containers ready, jobs re-run, oauth2-proxies restarted).
. "$(dirname "$0")/lib.sh"
# Keycloak's token endpoint, stood in for by tests/e2e/tokenserver.py; the credentials are in a file
KC_PASSWORD="kc-Pa55-$RANDOM$RANDOM"
printf 'admin\n%s\n' "$KC_PASSWORD" > "$E2E/kc-creds"
chmod 600 "$E2E/kc-creds"
KC_ADDR=127.25.$((RANDOM % 200 + 20)).9
USER_NAME=admin USER_PASSWORD=$KC_PASSWORD COUNT_FILE=$E2E/kc-grants \
  python3 "$(dirname "$0")/tokenserver.py" "$KC_ADDR" >"$E2E/kc.out" 2>&1 &
BG_PIDS+=($!)
disown $!
for _ in $(seq 1 600); do grep -q port= "$E2E/kc.out" && break; sleep 0.05; done
KEYCLOAK_URL="http://$KC_ADDR:$(sed -n 's/^port=//p' "$E2E/kc.out")/keycloak/realms/shasta/protocol/openid-connect/token"
KEYCLOAK_CREDS=$E2E/kc-creds
E2E_NODES=0 e2e_up
USERS="postgres service_account standby"
backup keycloak-postgres
FP0=$(fingerprints keycloak-postgres service_db)
job_uids() { kubectl get job keycloak-setup keycloak-users-localize -n services -o jsonpath='{.items[*].metadata.uid}'; }
uids0=$(job_uids)

sql keycloak-postgres service_db "DELETE FROM user_role_mapping; DELETE FROM credential" || bail "break"
restore_and_check "keycloak with the manifest" keycloak keycloak-postgres services statefulset cray-keycloak 3 \
  "$USERS" service_db --dump "$DUMP" --manifest "$MANIFEST"
same_as_psql "keycloak" keycloak-postgres services "$DUMP"
uids1=$(job_uids)
[ "$(wc -w <<<"$uids1")" = 2 ] && [ "${uids1%% *}" != "${uids0%% *}" ] && [ "${uids1##* }" != "${uids0##* }" ]
ok $? "keycloak-setup and keycloak-users-localize were replaced (new uids)"
is "both jobs completed" "$(kubectl get job keycloak-setup keycloak-users-localize -n services -o json |
  jq '[.items[] | select(.status.conditions[]? | .type == "Complete" and .status == "True")] | length')" 2
restarted=0
for d in customer-access-ingress customer-high-speed-ingress customer-management-ingress; do
  [ -n "$(restarted_at deployment "cray-oauth2-proxies-$d" services)" ] && restarted=$((restarted + 1))
done
is "the three oauth2-proxies deployments were rolled out again" "$restarted" 3
grep -q "Wait until every container of every cray-keycloak pod is ready" "$E2E/out"; ok $? "every keycloak container was waited for"
grep -q "a token was obtained for admin" "$E2E/out"; ok $? "a token was obtained from the token endpoint"
is "one password grant, accepted" "$(cat "$E2E/kc-grants" 2>/dev/null)" ok
! grep -rqF "$KC_PASSWORD" "$E2E/out" "$(newest_run)/journal.jsonl" "$(newest_run)/log"
ok $? "the Keycloak password appears in no output, journal or log"
! grep -q "kc-e2e-access-token" "$E2E/out"; ok $? "the token is not shown"

sql keycloak-postgres service_db "DELETE FROM user_entity WHERE realm_id = 'shasta'" 2>/dev/null ||
  sql keycloak-postgres service_db "TRUNCATE user_entity CASCADE" || bail "break again"
restore_and_check "keycloak without a manifest" keycloak keycloak-postgres services statefulset cray-keycloak 3 \
  "$USERS" service_db --dump "$DUMP"
done_testing
