#!/usr/bin/env bash
# tests/e2e/services_s3.t — Keycloak, VCS, HSM and SLS restored from a real S3 server (radosgw) with
# `pgr run SERVICE --yes`: the newest complete backup and its manifest, found by the service's name.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
e2e_s3_up

# service cluster namespace kind client replicas "users" "dbs" "break db" "break sql"
CASES=(
  "keycloak|keycloak-postgres|services|statefulset|cray-keycloak|3|postgres service_account standby|service_db|service_db|DELETE FROM credential"
  "vcs|gitea-vcs-postgres|services|deployment|gitea-vcs|1|postgres service_account standby|service_db|service_db|DELETE FROM action"
  "hsm|cray-smd-postgres|services|deployment|cray-smd|3|postgres service_account hmsdsuser standby|hmsds|hmsds|DELETE FROM node_nid_mapping"
  "sls|cray-sls-postgres|services|deployment|cray-sls|3|postgres service_account slsuser standby|sls service_db|sls|DELETE FROM networks"
)
for c in "${CASES[@]}"; do
  IFS='|' read -r svc cluster ns kind client want users dbs bdb bsql <<<"$c"
  backup "$cluster"
  s3_upload "$DUMP" "$MANIFEST"
  [ "$svc" = hsm ] && export FP_EXCLUDE=--exclude-table-data=comp_eth_interfaces || unset FP_EXCLUDE
  # shellcheck disable=SC2086
  FP0=$(fingerprints "$cluster" $dbs)
  sql "$cluster" "$bdb" "$bsql" || bail "break $svc"
  restore_and_check "$svc from S3" "$svc" "$cluster" "$ns" "$kind" "$client" "$want" "$users" "$dbs"
  grep -q "s3://postgres-backup/$(basename "$DUMP")" "$E2E/out"; ok $? "$svc: the backup came from S3 ($(basename "$DUMP"))"
done
done_testing
