#!/usr/bin/env bash
# tests/e2e/tls.t — pgr's connections to the sandbox's database pods, which serve TLS as Spilo does
# (a self-signed certificate made at each server start, hostnossl reject): the default (sslmode
# require, channel binding), verify-ca against the pod's own certificate supplied by the site, a
# certificate of another pod refused before anything changes, and the site's prefer warned about.
# The HSM dry run connects for real (its schema check reads the live database).
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
backup cray-smd-postgres

# the certificate the pod's server made when it started (it is its own CA)
cert_of() { echo "$(dirname "$(cluster_json "$1" | jq -r .data_dir)")/tls/server.crt"; }
# site_with LUA: the sandbox's site file with a postgres table
site_with() { sed "s|^return {|return {\n  postgres = $1,|" "$E2E/site.lua" > "$E2E/site-pg.lua"; }
dry_hsm() { pgr_run services/hsm.lua --dump "$DUMP" --manifest "$MANIFEST" --dry-run "$@"; }

dry_hsm
is "the default (require, channel binding): the HSM dry run passes every check" "$?" 0
grep -qE "ok +Check the backup's HSM schema version equals the deployed one.*schema version [0-9]+" "$E2E/out"
ok $? "... its schema check read the live database"
grep -q "^warning: PostgreSQL" "$E2E/out"; ok $(( ! $? )) "... and nothing about PostgreSQL is warned"

cp "$(cert_of cray-smd-postgres)" "$E2E/smd.crt"
site_with "{ sslmode = \"verify-ca\", sslrootcert = \"$E2E/smd.crt\" }"
dry_hsm --site "$E2E/site-pg.lua"
rc=$?
is "verify-ca with the pod's certificate supplied by the site: the dry run passes" "$rc" 0
[ "$rc" = 0 ] || show_out 20

cp "$(cert_of spire-postgres)" "$E2E/spire.crt"
before=$(kubectl get postgresql cray-smd-postgres -n services -o jsonpath='{.metadata.resourceVersion}')
site_with "{ sslmode = \"verify-ca\", sslrootcert = \"$E2E/spire.crt\" }"
pgr_run services/hsm.lua --dump "$DUMP" --manifest "$MANIFEST" --yes --site "$E2E/site-pg.lua"
is "verify-ca with another pod's certificate: exit 3" "$?" 3
grep -q "certificate verify failed" "$E2E/out"; ok $? "... the message says the certificate did not verify"
is "... and cray-smd-postgres is untouched" \
  "$(kubectl get postgresql cray-smd-postgres -n services -o jsonpath='{.metadata.resourceVersion}')" "$before"

site_with '{ sslmode = "prefer" }'
dry_hsm --site "$E2E/site-pg.lua"
is "the site's sslmode prefer still works" "$?" 0
grep -q '^warning: PostgreSQL connections to the database pods may go without TLS (postgres.sslmode = "prefer"' "$E2E/out"
ok $? "... and is warned about"
done_testing
