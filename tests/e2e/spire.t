#!/usr/bin/env bash
# tests/e2e/spire.t — `pgr run services/spire.lua` end to end on the sandbox (kubesim + real PostgreSQL
# pods + sshd nodes): from a local dump with its manifest, then without it (the password path).
. "$(dirname "$0")/lib.sh"
e2e_up
USERS="postgres service_account spire standby"

backup spire-postgres
fp0=$(fingerprint spire-postgres spire)
export MANIFEST
manifest_pw=$("$PGR" -e 'local y = require "pgr.yaml" local b = require "pgr.base64"
  local f = io.open(os.getenv("MANIFEST"))
  for _, d in ipairs(y.decode(f:read("a"))) do
    if d.metadata.name == "postgres.spire-postgres.credentials" then print(b.decode(d.data.password)) end
  end')
[ -n "$manifest_pw" ] || bail "no postgres password in the manifest"

# ---------------------------------------------------------------- with the manifest
sql spire-postgres spire "DELETE FROM selectors; DROP TABLE bundles; UPDATE migrations SET version = 0" || bail "break spire"
[ "$(fingerprint spire-postgres spire)" != "$fp0" ] || bail "the break changed nothing"

pgr_run services/spire.lua --dump "$DUMP" --manifest "$MANIFEST" --yes
rc=$?
is "restore with the manifest exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
grep -q "all $(step_count spire) steps done" "$E2E/out"; ok $? "every step reported done"
is "the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
is "every secret's user logs in with its password" "$(logins spire-postgres spire $USERS)" "$USERS "
is "the postgres secret holds the manifest's password again" \
   "$(kubectl get secret postgres.spire-postgres.credentials -n spire -o jsonpath='{.data.password}' | base64 -d)" "$manifest_pw"
is "spire-server is back at its 3 replicas" "$(replicas statefulset spire-server spire)" 3
is "spire-postgres is back at 3 instances" "$(instances spire-postgres spire)" 3
is "3 spire-server pods are ready" "$(kubectl get pods -n spire -l app.kubernetes.io/name=spire-server -o json |
   jq '[.items[] | select(.status.conditions[]? | .type == "Ready" and .status == "True")] | length')" 3
[ -n "$(restarted_at daemonset spire-agent spire)" ]; ok $? "daemonset spire-agent was rolled out again (restartedAt)"
[ -n "$(restarted_at deployment spire-jwks spire)" ]; ok $? "deployment spire-jwks was rolled out again (restartedAt)"
reached=0
for node in $("$PGR" -e 'for _, h in ipairs(require("pgr.hostlist").expand(os.getenv("NODELIST"))) do print(h) end' 2>/dev/null ||
              nodeset -e "$NODELIST"); do
  grep -qx "restart spire-agent" "$NODES/systemctl.$node" 2>/dev/null && reached=$((reached + 1))
done
is "spire-agent was restarted on all 9 nodes" "$reached" 9
is "the storage-node fix ran once" "$(cat "$E2E/fix-storage" 2>/dev/null)" "fixed"
is "the JWT check ran once" "$(cat "$E2E/jwt" 2>/dev/null)" "called"
! grep -q "e2e-token-value" "$E2E/out"; ok $? "the fetched token is not shown"
run=$(newest_run)
is "the journal ends with run_finished ok" "$(tail -1 "$run/journal.jsonl" | jq -r .status)" ok
leaks=0
for f in "$E2E/out" "$run/journal.jsonl" "$run/log" "$run/state.json"; do
  grep -qF "$manifest_pw" "$f" && { leaks=$((leaks + 1)); echo "# secret in $f"; }
done
is "no password in the output, journal, log or state" "$leaks" 0
is "the run directory is 0700, saved files 0600" \
   "$(stat -c %a "$run") $(stat -c %a "$run"/saved/* | sort -u | tr '\n' ' ')" "700 600 "
[ -f "$run/saved/postgresql.json" ] && [ -f "$run/saved/secrets.json" ]; ok $? "the postgresql object and the secrets were saved"
is "no pgr_restore role is left" "$(sql spire-postgres postgres "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pgr\_restore%'")" 0
grep -q "pg_dumpall -c of PostgreSQL" "$E2E/out"; ok $? "preflight read the dump's header: pg_dumpall -c, its version"
grep -qE "restored .*: [0-9]+ statements \(1 not sent\), [0-9]+ COPY rows, [0-9]+ expected errors" "$E2E/out"
ok $? "the CSM backup (pg_dumpall -c of a Spilo cluster) restored with expected errors only"
grep -q "expected ×[0-9]* role_kept" "$run/log"; ok $? "the run's log names the expected classes"
same_as_psql "spire" spire-postgres spire "$DUMP"

# ---------------------------------------------------------------- without the manifest
sql spire-postgres spire "DELETE FROM registered_entries WHERE id > 10" 2>/dev/null
sql spire-postgres spire "TRUNCATE selectors, registered_entries CASCADE" || bail "break spire again"
# this run also speaks --json: events on stdout, the human lines on stderr
timeout 600 "$PGR" run services/spire.lua --dump "$DUMP" --yes --json >"$E2E/events" 2>"$E2E/out"
rc=$?
is "restore without a manifest (--json) exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
grep -q "passwords set from the current secrets" "$E2E/out"; ok $? "the passwords were set from the current secrets"
is "every line on stdout is a JSON object" "$(jq -c 'type' "$E2E/events" 2>&1 | sort -u)" '"object"'
is "--json: run_started, a started and a done event per step (the safety backup's own inside step 6), then run_finished ok" \
   "$(jq -r .event "$E2E/events" | grep -v progress | uniq -c | awk '{ printf "%s %s,", $2, $1 }')" \
   "run_started 1,$(for _ in $(seq $(($(step_no spire "Back up") - 1))); do printf 'step_started 1,step_done 1,'; done)step_started 1,backup_started 1,backup_finished 1,step_done 1,$(for _ in $(seq $(($(step_count spire) - $(step_no spire "Back up")))); do printf 'step_started 1,step_done 1,'; done)run_finished 1,"
case "$(tail -1 "$E2E/events" | jq -r .way_back)" in
  "pgr run services/spire.lua --dump $STATE/backups/spire-postgres-"*".psql --manifest $STATE/backups/spire-postgres-"*".manifest")
    ok 0 "--json: run_finished carries the way back (the safety backup in the state directory: no S3 here)";;
  *) ok 1 "--json: run_finished carries the way back"; tail -1 "$E2E/events" | sed 's/^/# /';;
esac
is "--json: the last event says ok, exit 0" "$(tail -1 "$E2E/events" | jq -r '"\(.status) \(.exit)"')" "ok 0"
leaks=0
for u in $USERS; do
  pw=$(kubectl get secret "${u//_/-}.spire-postgres.credentials" -n spire -o jsonpath='{.data.password}' | base64 -d)
  [ -n "$pw" ] && grep -qF "$pw" "$E2E/events" "$E2E/out" && leaks=$((leaks + 1))
done
is "--json: no secret's password in the events or on stderr" "$leaks" 0
is "--json: the dump's progress came as events" "$(jq -r 'select(.event == "progress") | .label' "$E2E/events" |
   grep -c 'restore spire-postgres' | awk '{ print ($1 > 0) }')" 1
is "the spire database equals the backup again" "$(fingerprint spire-postgres spire)" "$fp0"
is "every secret's user logs in with its (new) password" "$(logins spire-postgres spire $USERS)" "$USERS "
[ "$(kubectl get secret postgres.spire-postgres.credentials -n spire -o jsonpath='{.data.password}' | base64 -d)" != "$manifest_pw" ]
ok $? "the secrets are the re-created cluster's, not the manifest's"
is "spire-server replicas restored" "$(replicas statefulset spire-server spire)" 3
is "spire-postgres instances restored" "$(instances spire-postgres spire)" 3
is "two runs, both finished" "$(for r in "$STATE"/runs/*; do tail -1 "$r/journal.jsonl" | jq -r .status; done | tr '\n' ' ')" "ok ok "
done_testing
