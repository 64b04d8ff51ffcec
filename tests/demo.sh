#!/usr/bin/env bash
# tests/demo.sh — `make demo`: the sandbox (kubesim with the CSM fixture and its real PostgreSQL pods, a
# real S3 server holding a fresh backup of every service, sshd nodes), the Spire database broken, then
# `pgr run services/spire.lua --yes` restoring it from S3, and the data shown back; `pgr status spire`
# before the break, after it and after the restore. Everything is torn down.
. "$(dirname "$0")/e2e/lib.sh"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# bold on a terminal only, and never under NO_COLOR
{ [ -n "${NO_COLOR:-}" ] || [ ! -t 1 ]; } && say() { printf '\n== %s\n' "$*"; }
bail() { echo "demo: $*" >&2; exit 1; }
cd "$ROOT" || exit 1

say "Starting the sandbox: Kubernetes simulator (CSM fixture), 9 NCNs over ssh, a Ceph radosgw S3 server"
e2e_up
e2e_s3_up
kubectl get postgresql -A
say "Backing up every service into s3://postgres-backup, as CSM's cronjobs do"
for c in spire-postgres keycloak-postgres gitea-vcs-postgres cray-smd-postgres cray-sls-postgres; do
  backup "$c"
  s3_upload "$DUMP" "$MANIFEST"
done
"$PGR" backups 2>/dev/null || true

count() { sql spire-postgres spire "SELECT 'registered_entries: ' || (SELECT count(*) FROM registered_entries) ||
  ', selectors: ' || (SELECT count(*) FROM selectors) || ', bundles: ' ||
  (SELECT CASE WHEN to_regclass('bundles') IS NULL THEN 'table missing' ELSE (SELECT count(*) FROM bundles)::text END)" 2>&1; }
say "The Spire database now"
count
say "pgr status spire"
"$PGR" status spire
say "Breaking it: DELETE FROM selectors; DELETE FROM registered_entries; DROP TABLE bundles; ALTER ROLE spire PASSWORD NULL"
sql spire-postgres spire "DELETE FROM selectors; DELETE FROM registered_entries; DROP TABLE bundles; ALTER ROLE spire PASSWORD NULL"
count
say "pgr status spire (the lost rows are the data's business; the spire user that cannot log in is the cluster's)"
"$PGR" status spire

say "pgr plan services/spire.lua"
"$PGR" plan services/spire.lua
say "pgr run services/spire.lua --yes"
time "$PGR" run services/spire.lua --yes
rc=$?
say "The Spire database after the restore"
count
echo "every user logs in with its secret: $(logins spire-postgres spire postgres service_account spire standby)"
echo "spire-server replicas: $(replicas statefulset spire-server spire); spire-postgres instances: $(instances spire-postgres spire)"
echo "spire-agent restarted on: $(cd "$NODES" && ls systemctl.* 2>/dev/null | sed 's/systemctl\.//' | tr '\n' ' ')"
echo "journal: $(newest_run)"
say "pgr status spire"
"$PGR" status spire
say "Tearing the sandbox down"
exit $rc
