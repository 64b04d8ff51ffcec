#!/usr/bin/env bash
# tests/e2e/resume_matrix.t — kill -9 of `pgr run` at several instants inside every step, each followed
# by --resume: right as the step starts, right after its first change to the cluster took effect,
# as its first wait on that change begins, and when its action is done but not yet journaled
# (PGR_TEST_KILL_AT=STEP:INSTANT, lua/pgr/runbook.lua). The instants a step has are read from the
# journal of an uninterrupted run of the same backup; the chain of killed runs must then leave the
# cluster exactly as that run did: data, secrets, logins, replica counts, every step done once.
#
# MATRIX_SERVICES picks the services (default: spire and sls — Spire's full procedure, and SLS's
# in-place restore with restart = "all"); `make test-long` runs all five.
. "$(dirname "$0")/lib.sh"
E2E_NODES=${E2E_NODES:-1}
e2e_up
SERVICES=${MATRIX_SERVICES:-spire sls}

# service cluster namespace kind client replicas "users" "dbs" "break db" "break sql"
declare -A CASE=(
  [spire]="spire-postgres|spire|statefulset|spire-server|3|postgres service_account spire standby|spire|spire|DELETE FROM selectors; DROP TABLE bundles"
  [keycloak]="keycloak-postgres|services|statefulset|cray-keycloak|3|postgres service_account standby|service_db|service_db|DELETE FROM credential"
  [vcs]="gitea-vcs-postgres|services|deployment|gitea-vcs|1|postgres service_account standby|service_db|service_db|DELETE FROM action"
  [hsm]="cray-smd-postgres|services|deployment|cray-smd|3|postgres service_account hmsdsuser standby|hmsds|hmsds|DELETE FROM node_nid_mapping"
  [sls]="cray-sls-postgres|services|deployment|cray-sls|3|postgres service_account slsuser standby|sls service_db|sls|DELETE FROM networks"
)

# the kill instants of each step of the journal $1: "STEP:start STEP:write STEP:wait STEP:done" lines,
# from the first step that changes anything (the preflight checks only read)
instants() {
  jq -r 'select(.step != null) | "\(.event) \(.step) \(.name // "")"' "$1" | awk '
    $1 == "step_started" && !first && $3 == "Record" { first = $2 }
    $1 == "step_started" { order[++n] = $2 }
    $1 == "write" { w[$2]++ } $1 == "wait" { v[$2]++ }
    END { for (i = 1; i <= n; i++) { s = order[i]; if (!first || s < first) continue
            print s ":start"; if (w[s]) print s ":write"; if (v[s]) print s ":wait"; print s ":done" } }'
}
# the exit status of a pgr run killed at $1, started with the arguments after it
killed_run() {
  local at=$1
  shift
  ( PGR_TEST_KILL_AT=$at timeout 600 "$PGR" run "services/$svc.lua" "$@" >>"$E2E/chain.out" 2>&1 & wait $! ) 2>/dev/null
}
# the state a run leaves: data, who logs in, the secrets' passwords, the client's and the cluster's counts
outcome() {
  local u
  # shellcheck disable=SC2086
  echo "data $(fingerprints "$cluster" $dbs)"
  echo "logins $(logins "$cluster" "$ns" $users)"
  for u in $users; do
    echo "secret $u $(kubectl get secret "${u//_/-}.$cluster.credentials" -n "$ns" -o jsonpath='{.data.password}' | sha256sum | cut -c1-12)"
  done
  echo "client $(replicas "$kind" "$client" "$ns") instances $(instances "$cluster" "$ns")"
  echo "loaders $(sql "$cluster" postgres "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgr\_restore%'")"
}

# The reported case: killed right after the master pod was deleted, resumed while its successor is
# still starting (held back by the simulator, so the resume surely finds no master): the resumed step
# waits for the pod the killed run was restarting, instead of failing to find a master.
if [[ " $SERVICES " == *" spire "* ]]; then
  svc=spire
  backup spire-postgres
  step=$("$PGR" plan services/spire.lua 2>/dev/null | sed -n 's/^ *\([0-9]*\)\. Restart the master pod.*/\1/p')
  [ -n "$step" ] || bail "no restart step in the plan"
  "$KS" admin "$SIM" '{"op":"pod_timing","match":"spire/spire-postgres-","pod_start":15}' >/dev/null || bail "pod_timing"
  # the restart step deletes one pod: it is the step's first write
  : >"$E2E/chain.out"
  killed_run "$step:write" --dump "$DUMP" --manifest "$MANIFEST" --yes
  is "spire killed right after deleting the master pod (step $step)" "$?" 137
  masters=$(kubectl get pods -n spire -l application=spilo,cluster-name=spire-postgres,spilo-role=master -o name | wc -l)
  timeout 600 "$PGR" run services/spire.lua --resume --yes >"$E2E/out" 2>&1
  rc=$?
  is "... resumed while no master pod ran ($masters), the run completes" "$rc" 0
  [ "$rc" = 0 ] || show_out 20
  "$KS" admin "$SIM" '{"op":"clear_pod_timing"}' >/dev/null
  rm -rf "$STATE/runs"
fi

for svc in $SERVICES; do
  IFS='|' read -r cluster ns kind client want users dbs bdb bsql <<<"${CASE[$svc]}"
  [ "$svc" = hsm ] && export FP_EXCLUDE=--exclude-table-data=comp_eth_interfaces || unset FP_EXCLUDE
  backup "$cluster"
  args=(--dump "$DUMP" --manifest "$MANIFEST" --yes)

  # the uninterrupted run: what every chain of kills must end with (alone in the state directory:
  # newest_run goes by name)
  rm -rf "$STATE/runs"
  sql "$cluster" "$bdb" "$bsql" || bail "break $svc"
  pgr_run "services/$svc.lua" "${args[@]}"
  rc=$?
  is "$svc: the uninterrupted run exits 0" "$rc" 0
  [ "$rc" = 0 ] || { show_out 30; continue; }
  ref=$(outcome)
  mapfile -t points < <(instants "$(newest_run)/journal.jsonl")
  steps=$(jq -r 'select(.event == "step_done") | .step' "$(newest_run)/journal.jsonl" | sort -n | tail -1)
  [ "${#points[@]}" -gt 20 ]; ok $? "$svc: ${#points[@]} kill instants in the steps after preflight"

  # the chain: each run dies at the next instant, the next one resumes
  sql "$cluster" "$bdb" "$bsql" || bail "break $svc again"
  : >"$E2E/chain.out"
  rm -rf "$STATE/runs"
  kills=0 missed=""
  for p in "${points[@]}"; do
    killed_run "$p" "${args[@]}"
    rc=$?
    args=(--resume --yes)
    if [ "$rc" = 137 ]; then kills=$((kills + 1)); else missed="$p (exit $rc)"; break; fi
  done
  is "$svc: pgr was killed at every instant, each resumed" "$kills${missed:+, missed at $missed}" "${#points[@]}"
  [ -z "$missed" ] || sed 's/^/# chain: /' "$E2E/chain.out" | tail -25
  timeout 600 "$PGR" run "services/$svc.lua" --resume --yes >"$E2E/out" 2>&1
  rc=$?
  is "$svc: the last --resume completes" "$rc" 0
  [ "$rc" = 0 ] || show_out 30
  run=$(newest_run)
  is "$svc: one run directory for the whole chain" "$(ls "$STATE/runs" | wc -l)" 1
  is "$svc: every step is journaled done exactly once" \
    "$(jq -r 'select(.event == "step_done") | .step' "$run/journal.jsonl" | sort -n | uniq | wc -l) $(jq -r 'select(.event == "step_done") | .step' "$run/journal.jsonl" | wc -l)" "$steps $steps"
  got=$(outcome)
  if [ "$got" = "$ref" ]; then ok 0 "$svc: the chain left the cluster as the uninterrupted run did (data, logins, secrets, counts)"
  else ok 1 "$svc: the chain left the cluster as the uninterrupted run did"; diff <(echo "$ref") <(echo "$got") | sed 's/^/# /'; fi
  is "$svc: $client is at $want replicas" "$(replicas "$kind" "$client" "$ns")" "$want"
done
done_testing
