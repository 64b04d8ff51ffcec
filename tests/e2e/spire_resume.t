#!/usr/bin/env bash
# tests/e2e/spire_resume.t — kill -9 of `pgr run services/spire.lua` at every step boundary and in the
# middle of the dump stream, each time followed by --resume: the last one completes and nothing is lost.
. "$(dirname "$0")/lib.sh"
e2e_up
USERS="postgres service_account spire standby"
STEPS=$(step_count spire)

# enough data that the stream lasts long enough to be cut in the middle
sql spire-postgres spire "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS h, repeat('x', 150) AS pad
                          FROM generate_series(1, 150000) g" || bail "bulk table"
backup spire-postgres
fp0=$(fingerprint spire-postgres spire)
sql spire-postgres spire "DROP TABLE bulk; DELETE FROM selectors" || bail "break spire"

# start ARGS...: pgr run in the background; PGR_PID (KILL_AT=N: it dies of SIGKILL as step N starts)
start() {
  # job control messages ("Killed") would only clutter the TAP stream
  PGR_TEST_KILL_AT=${KILL_AT:-} "$PGR" run services/spire.lua "$@" >>"$E2E/chain.out" 2>&1 &
  PGR_PID=$!
  BG_PIDS+=("$PGR_PID")
}
# until COMMAND succeeds (or pgr exits, or 120 s pass)
wait_until() {
  local i
  for ((i = 0; i < 6000; i++)); do
    "$@" && return 0
    kill -0 "$PGR_PID" 2>/dev/null || return 1
    sleep 0.02
  done
  return 1
}
# whether the process now running has journaled the start of step $1 (after its own run_resumed)
started() {
  awk -v k="$1" -v pid="$PGR_PID" '/"event":"run_(started|resumed)"/ { mine = index($0, "\"pid\":" pid ",") > 0; seen = 0 }
                 mine && $0 ~ "\"event\":\"step_started\".*\"step\":" k "," { seen = 1 }
                 END { exit !seen }' "$(newest_run)/journal.jsonl" 2>/dev/null
}
# whether the loader role is copying into the spire database right now
streaming() {
  [ "$(socket_sql "$SOCK" postgres "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'pgr\_restore\_%'
        AND datname = 'spire' AND query LIKE 'COPY%'" 2>/dev/null)" = 1 ]
}
# kill -9 pgr; true when it died of that signal
kill9() { kill -9 "$PGR_PID" 2>/dev/null; wait "$PGR_PID" 2>/dev/null; [ $? = 137 ]; }
# true when pgr died of SIGKILL by itself (PGR_TEST_KILL_AT) after journaling the start of step $1
killed_at() { wait "$PGR_PID" 2>/dev/null; [ $? = 137 ] && started "$1"; }

kills=0 missed=0
args=(--dump "$DUMP" --manifest "$MANIFEST" --yes)
for ((k = 2; k <= STEPS; k++)); do
  KILL_AT=$k start "${args[@]}"
  args=(--resume --yes)
  if killed_at "$k"; then kills=$((kills + 1)); else missed=$((missed + 1)); echo "# missed step $k"; break; fi
  if [ "$k" = 12 ]; then
    # and once more inside the stream itself, by an outside kill -9 while COPY data flows
    SOCK=$(socket_dir spire-postgres)
    KILL_AT= start --resume --yes
    if wait_until streaming && kill9; then midstream=yes; else midstream=no; fi
  fi
done
is "pgr was killed as each of steps 2..$STEPS started" "$kills $missed" "$((STEPS - 1)) 0"
is "pgr was killed in the middle of streaming the dump" "${midstream:-no}" yes

timeout 600 "$PGR" run services/spire.lua --resume --yes >"$E2E/out" 2>&1
rc=$?
is "the last --resume completes" "$rc" 0
[ "$rc" = 0 ] || { show_out 40; sed 's/^/# chain: /' "$E2E/chain.out" | tail -30; }
grep -q "the last run on spire/spire-postgres (pid [0-9]*) ended without releasing its lock" "$E2E/out"
ok $? "the stale lock of the killed run was reported"
run=$(newest_run)
is "one run directory for the whole chain" "$(ls "$STATE/runs" | wc -l)" 1
is "every step is journaled done exactly once" \
   "$(jq -r 'select(.event == "step_done") | .step' "$run/journal.jsonl" | sort -n | uniq | wc -l) $(jq -r 'select(.event == "step_done") | .step' "$run/journal.jsonl" | wc -l)" "$STEPS $STEPS"
# the first start was the new run; every kill (each step's, and the one mid-stream) was followed by a resume
is "the run was resumed after every kill" "$(jq -r 'select(.event == "run_resumed") | .event' "$run/journal.jsonl" | wc -l)" "$((kills + 1))"
is "the journal ends with run_finished ok" "$(tail -1 "$run/journal.jsonl" | jq -r .status)" ok
is "the spire database equals the backup (bulk table included)" "$(fingerprint spire-postgres spire)" "$fp0"
is "every secret's user logs in with its password" "$(logins spire-postgres spire $USERS)" "$USERS "
is "spire-server is back at 3 replicas (the count recorded before the kills)" "$(replicas statefulset spire-server spire)" 3
is "one safety backup for the whole chain: --resume never takes it again" "$(ls "$STATE"/backups/*.psql | wc -l)" 1
grep -q "the data as it was before this run can be restored with: pgr run services/spire.lua --dump $STATE/backups/spire-postgres-" "$E2E/out"
ok $? "the last resume prints the way back"
is "spire-postgres is back at 3 instances" "$(instances spire-postgres spire)" 3
[ -n "$(restarted_at daemonset spire-agent spire)" ] && [ -n "$(restarted_at deployment spire-jwks spire)" ]
ok $? "spire-agent and spire-jwks were rolled out again"
reached=0
for node in $(nodeset -e "$NODELIST"); do grep -qx "restart spire-agent" "$NODES/systemctl.$node" 2>/dev/null && reached=$((reached + 1)); done
is "spire-agent was restarted on all 9 nodes" "$reached" 9
is "no pgr_restore role is left" "$(sql spire-postgres postgres "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgr\_restore%'")" 0
done_testing
