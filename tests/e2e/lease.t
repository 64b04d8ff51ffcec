#!/usr/bin/env bash
# tests/e2e/lease.t — the cluster-side lock: two `pgr run spire` from different state directories at
# once, exactly one runs and the other names it; a holder killed by kill -9 keeps the lease until it
# expires (another machine's run waits for that, then takes it over), and `--resume` of the same run
# takes it back at once. The Lease is the simulator's coordination.k8s.io/v1 object.
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
site_without_nodes
backup spire-postgres
# a short lease for the takeover cases (the default is 300 s)
sed 's/^return {/return { lease_seconds = 12,/' "$E2E/site.lua" > "$E2E/site12.lua"
args=(--dump "$DUMP" --manifest "$MANIFEST" --yes)

holder() { kubectl get lease pgr-spire-postgres -n spire -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
cluster_state() {
  kubectl get postgresql spire-postgres -n spire -o jsonpath='{.metadata.uid} {.metadata.resourceVersion}'
  kubectl get statefulset spire-server -n spire -o jsonpath=' {.metadata.resourceVersion}'
  kubectl get secrets -n spire -l cluster-name=spire-postgres -o jsonpath='{range .items[*]} {.metadata.resourceVersion}{end}'
}
# run_in DIR OUT [ARGS...]: pgr run spire with its own state directory DIR, output in OUT
# (KILL_AT=N: it dies of SIGKILL as it journals the start of step N)
run_in() { local d=$1 o=$2; shift 2; PGR_TEST_KILL_AT=${KILL_AT:-} timeout 600 "$PGR" run services/spire.lua --state-dir "$d" "$@" >"$o" 2>&1; }
runs_in() { ls "$1/runs" 2>/dev/null | wc -l; }

# 1. two runs at once, from two state directories (two engineers, two machines)
run_in "$E2E/x" "$E2E/x.out" "${args[@]}" & px=$!
run_in "$E2E/y" "$E2E/y.out" "${args[@]}" & py=$!
BG_PIDS+=("$px" "$py")
wait "$px"; rx=$?
wait "$py"; ry=$?
is "two concurrent runs: one exits 0, the other 3" "$(printf '%s\n' "$rx" "$ry" | sort | tr '\n' ' ')" "0 3 "
if [ "$rx" = 0 ]; then win=x lose=y; else win=y lose=x; fi
wpid=$(jq -r 'select(.event == "run_started") | .pid' "$E2E/$win"/runs/*/journal.jsonl)
grep -q "spire-postgres is in use by [a-z_]*@[^ ]* pid $wpid run spire_spire-postgres-[0-9T.]*-$wpid (pgr run): lease spire/pgr-spire-postgres" "$E2E/$lose.out"
rc=$?
ok $rc "the refused run names the holder (user@host, pid, run id) and the lease"
[ $rc = 0 ] || sed 's/^/#   /' "$E2E/$lose.out" | tail -5
is "the refused run wrote nothing in its state directory" "$(runs_in "$E2E/$lose")" 0
is "the lease is free after the run" "$(holder)" ""

# 2. a holder killed by kill -9 (as it starts step 3, holding the lease): another machine's run is
# refused while the lease lasts, and takes it over once it expired
( KILL_AT=3 run_in "$E2E/a" "$E2E/a.out" "${args[@]}" --site "$E2E/site12.lua" & wait $! ) 2>/dev/null
is "the holder died of SIGKILL" "$?" 137
apid=$(jq -r 'select(.event == "run_started") | .pid' "$E2E"/a/runs/*/journal.jsonl)
case $(holder) in *" pid $apid run "*) ok 0 "the dead run still holds the lease" ;; *) ok 1 "the dead run still holds the lease"; echo "# holder: $(holder)" ;; esac
before=$(cluster_state)
run_in "$E2E/b" "$E2E/b.out" "${args[@]}"
is "while the lease lasts, a run from another state directory exits 3" "$?" 3
grep -q "in use by .* pid $apid run .*renewed [0-9]* s ago, expires in [0-9]* s unless renewed" "$E2E/b.out"
ok $? "it names the dead holder and when its lease expires"
is "it changed nothing" "$(cluster_state)" "$before"
is "it left no run behind" "$(runs_in "$E2E/b")" 0
# wait for the event: the first attempt that is not refused (each refused one costs a request)
tries=0
for ((i = 0; i < 240; i++)); do
  ( KILL_AT=3 run_in "$E2E/b" "$E2E/b.out" "${args[@]}" --site "$E2E/site12.lua" & wait $! ) 2>/dev/null
  rc=$?
  [ "$rc" = 3 ] || break
  tries=$((tries + 1))
  sleep 0.25
done
is "once the lease expired, the other machine's run took it (and died as step 3 started)" "$rc" 137
grep -q "took over the lease of spire/spire-postgres from .* pid $apid run .*: it was last renewed [0-9]* s ago and expired [0-9]* s ago" "$E2E/b.out"
rc=$?
ok $rc "it says whose lease it took over, and that it had expired (after $tries refused attempts)"
[ $rc = 0 ] || sed 's/^/#   /' "$E2E/b.out" | tail -5
bpid=$(jq -r 'select(.event == "run_started") | .pid' "$E2E"/b/runs/*/journal.jsonl)
case $(holder) in *" pid $bpid run "*) ok 0 "the lease is the new run's" ;; *) ok 1 "the lease is the new run's"; echo "# holder: $(holder)" ;; esac

# 3. --resume of the killed run takes its lease back at once (no waiting for it to expire)
run_in "$E2E/x" "$E2E/x2.out" "${args[@]}" --new
is "a run from a third state directory is refused: the killed run's lease is still live" "$?" 3
run_in "$E2E/b" "$E2E/b2.out" --resume --yes
rc=$?
is "--resume of the killed run takes the lease back at once and completes" "$rc" 0
[ "$rc" = 0 ] || sed 's/^/#   /' "$E2E/b2.out" | tail -20
grep -q "took over the lease of spire/spire-postgres from .* pid $bpid run .*: the same run, resumed" "$E2E/b2.out"
ok $? "it says it took back its own run's lease"
is "the lease is free at the end" "$(holder)" ""
is "spire-server is back at 3 replicas" "$(replicas statefulset spire-server spire)" 3
done_testing
