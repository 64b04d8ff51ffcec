#!/usr/bin/env bash
# tests/e2e/preflight.t — every preflight failure stops `pgr run` with exit 3 before anything changes,
# asserted on the simulator's objects: a truncated dump (a failed CSM job), a dump from a newer major,
# a dump dropping a database it never re-creates, a custom-format dump, a manifest of another
# cluster, a denied verb, the operator keeping old volumes (ConfigMap or OperatorConfiguration), a site
# command that is not installed, an HSM schema mismatch.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up

# What a restore would change first: the cluster object, its pods and secrets, the client's scale.
snapshot() { # NS CLUSTER CLIENT_KIND CLIENT
  kubectl get postgresql "$2" -n "$1" -o jsonpath='{.metadata.uid} {.metadata.resourceVersion} {.spec.numberOfInstances}'
  echo
  kubectl get pods -n "$1" -l "application=spilo,cluster-name=$2" -o jsonpath='{range .items[*]}{.metadata.uid} {end}'
  echo
  kubectl get secrets -n "$1" -l "cluster-name=$2" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}'
  echo
  kubectl get "$3" "$4" -n "$1" -o jsonpath='{.spec.replicas} {.metadata.generation}'
  echo
  kubectl get secrets -n "$1" -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}'
}
# refused DESC PATTERN ARGS...: pgr run exits 3, says PATTERN, changes nothing, leaves nothing to resume
refused() {
  local desc=$1 pattern=$2 before after rc
  shift 2
  before=$(snapshot spire spire-postgres statefulset spire-server)
  pgr_run "$@"
  rc=$?
  is "$desc: exit 3" "$rc" 3
  if grep -qE "$pattern" "$E2E/out" && grep -q "preflight failed: nothing was changed" "$E2E/out"; then ok 0 "$desc: the message says why"
  else ok 1 "$desc: the message says why"; show_out 10; fi
  after=$(snapshot spire spire-postgres statefulset spire-server)
  is "$desc: the cluster, its pods and secrets and spire-server are untouched" "$after" "$before"
  is "$desc: the run is closed as preflight_failed" "$(tail -1 "$(newest_run)/journal.jsonl" | jq -r .status)" preflight_failed
}

backup spire-postgres
# CSM's nightly job whose pg_dumpall died: the upload holds the first bytes, no manifest follows
trunc=$("$KS" backup "$SIM" spire-postgres "$E2E/failed-job" --truncate 60000 --timestamp 2099-01-01T03:10:04) || bail "truncated backup"
[ "$(ls "$E2E/failed-job")" = "spire-postgres-2099-01-01T03:10:04.psql" ]; ok $? "the failed job left a .psql and no .manifest"
refused "a truncated CSM backup (the failed job)" "truncated: pg_dumpall's completion trailer is missing \(a backup job" \
  services/spire.lua --dump "$trunc" --yes

# patch_version V: sets spire-postgres's spec.postgresql.version and waits for the operator to have
# handled it (its status goes Updating, then Running: seen on a watch opened before the patch), so
# that no status write of its lands inside the refused run's before/after snapshot
patch_version() {
  local w=$E2E/watch.$1 i
  kubectl get postgresql spire-postgres -n spire -w --output-watch-events \
    -o jsonpath='{.object.status.PostgresClusterStatus}{"\n"}' >"$w" 2>/dev/null &
  local wp=$!
  for i in $(seq 1 300); do [ -s "$w" ] && break; sleep 0.1; done
  kubectl patch postgresql spire-postgres -n spire --type merge -p "{\"spec\":{\"postgresql\":{\"version\":\"$1\"}}}" >/dev/null ||
    bail "patch the version to $1"
  for i in $(seq 1 600); do
    awk '/Updating/ { u = 1 } u && /Running/ { found = 1 } END { exit !found }' "$w" && break
    sleep 0.1
  done
  kill "$wp" 2>/dev/null; wait "$wp" 2>/dev/null
}

# a dump from a newer PostgreSQL than the target cluster runs: refused before anything is deleted
patch_version 14
refused "a dump from a newer major than the cluster" \
  "spire/spire-postgres: the dump was taken from PostgreSQL 1[5-9][.0-9]*, newer than the target cluster's PostgreSQL 14" \
  services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
patch_version "$(basename "$(dirname "$PGBIN")")"

# a DROP DATABASE whose database the dump never creates again would lose its data
grep -v '^CREATE DATABASE spire ' "$DUMP" > "$E2E/nocreate.psql"
refused "a dump that drops spire without creating it again" "drops database spire but never creates it again" \
  services/spire.lua --dump "$E2E/nocreate.psql" --manifest "$MANIFEST" --yes

"$PGBIN/pg_dump" -Fc -h "$(socket_dir spire-postgres)" -U postgres spire > "$E2E/custom.dump" || bail "pg_dump -Fc"
refused "a custom-format dump" "custom-format archive" \
  services/spire.lua --dump "$E2E/custom.dump" --manifest "$MANIFEST" --yes

out=$("$KS" backup "$SIM" keycloak-postgres "$BACKUP") || bail "keycloak backup"
refused "the manifest of another service" "in namespace services, not spire" \
  services/spire.lua --dump "$DUMP" --manifest "$(sed -n 2p <<<"$out")" --yes
sed 's/spire-postgres/spire-postgres-old/' "$MANIFEST" > "$E2E/other.manifest"
refused "the manifest of another cluster in the namespace" "does not hold the credentials of spire/spire-postgres" \
  services/spire.lua --dump "$DUMP" --manifest "$E2E/other.manifest" --yes

# a hostile or corrupt manifest: a secret named '..' or '.' would reach the API path as the namespace or
# the whole collection; refused in preflight, naming the entry, with not one secret of the namespace gone
for bad in '..' '.'; do
  { cat "$MANIFEST"; printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: "%s"\n  namespace: spire\ntype: Opaque\ndata:\n  password: eA==\n' "$bad"; } \
    > "$E2E/dots.manifest"
  refused "a manifest with a secret named '$bad'" "secret #[0-9]+ has the name \"${bad//./\\.}\", which is not a valid Secret name" \
    services/spire.lua --dump "$DUMP" --manifest "$E2E/dots.manifest" --yes
done

"$KS" admin "$SIM" '{"op":"deny","verb":"delete","resource":"postgresqls","namespace":"spire"}' >/dev/null
refused "a denied verb (delete postgresqls)" "not allowed in namespace spire: delete postgresqls" \
  services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
"$KS" admin "$SIM" '{"op":"allow_all"}' >/dev/null

# the operator keeps the volumes of a deleted cluster: a re-created one would start on the old data
kubectl patch configmap postgres-operator -n services --type merge \
  -p '{"data":{"enable_persistent_volume_claim_deletion":"false"}}' >/dev/null || bail "patch the operator's configmap"
refused "the operator's ConfigMap keeps volumes (enable_persistent_volume_claim_deletion false)" \
  "enable_persistent_volume_claim_deletion is false in configmap services/postgres-operator" \
  services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
kubectl patch configmap postgres-operator -n services --type merge \
  -p '{"data":{"enable_persistent_volume_claim_deletion":"true"}}' >/dev/null
# the CRD-based configuration, where the operator has one, is what it reads
kubectl apply -f - >/dev/null <<'YAML' || bail "create the OperatorConfiguration"
apiVersion: acid.zalan.do/v1
kind: OperatorConfiguration
metadata: {name: postgresql-operator-configuration, namespace: services}
configuration:
  resync_period: 30m
  kubernetes: {enable_persistent_volume_claim_deletion: false, enable_secrets_deletion: true}
YAML
refused "the operator's OperatorConfiguration keeps volumes" \
  "enable_persistent_volume_claim_deletion is false in operatorconfiguration services/postgresql-operator-configuration" \
  services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
kubectl delete operatorconfiguration postgresql-operator-configuration -n services >/dev/null

# HSM: the deployed schema moved on after the backup was taken
# the site's commands run after the restore: a missing program is found before anything changes
sed 's|spire_fix_storage = .*|spire_fix_storage = { "/opt/cray/nowhere/fix-spire-on-storage.sh" },|' \
  "$E2E/site.lua" > "$E2E/site-missing.lua"
grep -q nowhere "$E2E/site-missing.lua" || bail "site without the fix script"
refused "a site command that is not installed" \
  "/opt/cray/nowhere/fix-spire-on-storage.sh \(commands.spire_fix_storage\) is not found" \
  services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes --site "$E2E/site-missing.lua"

backup cray-smd-postgres
sql cray-smd-postgres hmsds "UPDATE system SET schema_version = 22" || bail "schema bump"
before=$(snapshot services cray-smd-postgres deployment cray-smd)
jobs_before=$(kubectl get job cray-smd-init -n services -o jsonpath='{.metadata.uid}')
pgr_run services/hsm.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
is "an HSM schema mismatch: exit 3" "$?" 3
grep -q "the backup's public.system.schema_version is 21 but the deployed service is at 22" "$E2E/out"
ok $? "an HSM schema mismatch: the message names both versions"
is "an HSM schema mismatch: cray-smd-postgres and cray-smd untouched" "$(snapshot services cray-smd-postgres deployment cray-smd)" "$before"
is "an HSM schema mismatch: the cray-smd-init job was not re-run" "$(kubectl get job cray-smd-init -n services -o jsonpath='{.metadata.uid}')" "$jobs_before"
sql cray-smd-postgres hmsds "UPDATE system SET schema_version = 21" || bail "schema back"
pgr_run services/hsm.lua --dump "$DUMP" --manifest "$MANIFEST" --dry-run
is "with the versions equal, the HSM dry run passes every check" "$?" 0
[ "$?" = 0 ] || show_out 20
done_testing
