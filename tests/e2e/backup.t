#!/usr/bin/env bash
# tests/e2e/backup.t — pgr's own backups on the sandbox with a real radosgw: `pgr backup` to S3 and to a
# directory (pg_dumpall -c by exec into the master pod, the manifest in the nightly job's format) restores
# with the runbook's own kubectl cp + kubectl exec ... psql lines; a pgr backup killed -9 mid-upload leaves
# no object; `pgr run` backs up the live cluster to S3 under pgr/ before changing it (dry run: only asks the
# master), a run killed -9 in the middle of that upload resumes with one backup and no stray upload, and a
# master that cannot be dumped stops the run before anything changes unless --no-safety-backup.
# (Restoring these -c backups through pgr run is tests/e2e/way_back.t.)
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
e2e_s3_up
site_without_nodes # the fan-out step is not what is tested here
USERS="postgres service_account spire standby"
pgr_names() { "$PGR" backups spire --json | jq -r '.[].name' | grep '^pgr/' | sort | tr '\n' ' '; }

# ---------------------------------------------------------------- pgr backup, restored by the runbook's lines
sql spire-postgres spire "CREATE TABLE backup_marker (id int PRIMARY KEY); INSERT INTO backup_marker SELECT generate_series(1, 100)" ||
  bail "marker"
FPA=$(fingerprint spire-postgres spire)
out=$("$PGR" backup spire 2>&1); rc=$?
is "pgr backup spire exits 0" "$rc" 0
B1=$(sed -n 's/^restore it with: pgr run spire --backup //p' <<<"$out")
case $B1 in pgr/spire-postgres-????-??-??T??:??:??) ok 0 "it prints how to restore it: --backup $B1";;
  *) ok 1 "it prints how to restore it"; echo "$out" | sed 's/^/# /';; esac
"$PGR" backups spire >"$E2E/list" 2>&1
grep -Eq "complete \(pgr\) +$B1\$" "$E2E/list"; ok $? "pgr backups lists it, complete, marked (pgr)"
"$PGR" backup spire --to "$E2E/bk" --json >"$E2E/bk.events" 2>"$E2E/bk.err"; is "pgr backup spire --to DIR --json exits 0" "$?" 0
is "--json: backup_started, progress, backup_finished ok" \
   "$(jq -r .event "$E2E/bk.events" | uniq | tr '\n' ' ')" "backup_started progress backup_finished "
is "--json: the last event says ok" "$(tail -1 "$E2E/bk.events" | jq -r .status)" ok
is "the directory's backup: a .psql and a .manifest, mode 0600" "$(stat -c '%a %n' "$E2E"/bk/* | sed 's|/.*/spire-postgres-[^.]*||')" "600 .manifest
600 .psql"
DIRDUMP=$(ls "$E2E"/bk/*.psql)
head -c 2000 "$DIRDUMP" | grep -q '^DROP DATABASE spire;$'; ok $? "the dump is pg_dumpall -c's: DROP DATABASE without IF EXISTS"
tail -3 "$DIRDUMP" | grep -q "^-- PostgreSQL database cluster dump complete$"; ok $? "the dump ends with pg_dumpall's trailer"
is "the manifest: the service's users, then postgres, then standby (CSM's order)" \
   "$(grep '^  name:' "${DIRDUMP%.psql}.manifest" | awk '{print $2}' | tr '\n' ' ')" \
   "service-account.spire-postgres.credentials spire.spire-postgres.credentials postgres.spire-postgres.credentials standby.spire-postgres.credentials "
is "each manifest document keeps only the nightly job's fields" \
   "$(F="${DIRDUMP%.psql}.manifest" "$PGR" -e 'local y = require "pgr.yaml" local f = io.open(os.getenv("F")) local keys = {}
      for _, d in ipairs(y.decode(f:read("a"))) do local k = {} for n in pairs(d) do k[#k + 1] = n end
        for n in pairs(d.metadata) do k[#k + 1] = "metadata." .. n end table.sort(k) keys[table.concat(k, ",")] = true end
      for k in pairs(keys) do print(k) end')" \
   "apiVersion,data,kind,metadata,metadata.labels,metadata.name,metadata.namespace,type"

sql spire-postgres spire "DELETE FROM selectors; DELETE FROM backup_marker" || bail "break for psql"
# the runbook's restore, its lines verbatim (the download renamed without ':' as the runbook does)
NAMESPACE=spire POSTGRESQL=spire-postgres
DUMPFILE=$(basename "${DIRDUMP//:/-}")
( cd "$E2E" && cp "$DIRDUMP" "$DUMPFILE" &&
  kubectl cp "./${DUMPFILE}" "${POSTGRESQL}-0:/home/postgres/${DUMPFILE}" -c postgres -n "${NAMESPACE}" &&
  kubectl exec "${POSTGRESQL}-0" -c postgres -n "${NAMESPACE}" -it -- psql -U postgres < "${DUMPFILE}" ) >"$E2E/psql.out" 2>&1
ok $? "pgr backup's dump restores with the runbook's kubectl cp + kubectl exec ... psql -U postgres"
is "... and the data equals the backed-up data" "$(fingerprint spire-postgres spire)" "$FPA"
is "... every secret's user logs in" "$(logins spire-postgres spire $USERS)" "$USERS "

# ---------------------------------------------------------------- kill -9 in the middle of pgr backup's upload
sql spire-postgres spire "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS h, repeat('x', 200) AS pad
                          FROM generate_series(1, 1000000) g" || bail "bulk table"
before=$(pgr_names)
"$PGR" backup spire --json >"$E2E/kill.events" 2>"$E2E/kill.err" &
bpid=$!; BG_PIDS+=("$bpid")
for _ in $(seq 1 1200); do
  # two 8 MiB parts streamed: the upload is under way
  [ "$(jq -r 'select(.event == "progress") | .done' "$E2E/kill.events" 2>/dev/null | tail -1)" -gt 17000000 ] 2>/dev/null && break
  kill -0 "$bpid" 2>/dev/null || break
  sleep 0.05
done
kill -9 "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; is "pgr backup was killed -9 mid-upload" "$?" 137
is "the bucket holds no object of the killed backup" "$(pgr_names)" "$before"

# ---------------------------------------------------------------- pgr run's safety backup to S3
backup spire-postgres # the chosen backup (the nightly job's kind), bulk table included
s3_upload "$DUMP" "$MANIFEST"
CHOSEN=$(basename "$DUMP" .psql)
FPB=$(fingerprint spire-postgres spire)
pgr_run services/spire.lua --backup "$CHOSEN" --dry-run; rc=$?
is "a dry run exits 0" "$rc" 0
grep -q "^$(step_tag spire "Back up spire-postgres")"' ok   Back up spire-postgres .*  the master answers$' "$E2E/out" &&
  grep -q "would back up spire/spire-postgres to s3://postgres-backup/pgr/spire-postgres-\*" "$E2E/out"
ok $? "the dry run asks the master and prints where the backup would go"
is "... and writes no backup" "$(pgr_names)" "$before"

sql spire-postgres spire "DELETE FROM selectors" || bail "break"
# killed -9 in the middle of step 6's upload: the resumed run aborts that upload and backs up again
PGR_TEST_KILL_AT= "$PGR" run services/spire.lua --backup "$CHOSEN" --yes >"$E2E/out" 2>&1 &
rpid=$!; BG_PIDS+=("$rpid")
upload=""
for _ in $(seq 1 1200); do
  upload=$(jq -r '.safety_upload.id // empty' "$(newest_run)/state.json" 2>/dev/null)
  [ -n "$upload" ] && break
  kill -0 "$rpid" 2>/dev/null || break
  sleep 0.02
done
sleep 0.3
kill -9 "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; is "pgr run killed -9 during its safety backup's upload" "$?" 137
[ -n "$upload" ]; ok $? "the run had journaled its upload's id before sending"
is "no object of the unfinished backup" "$(pgr_names)" "$before"
is "nothing in the cluster changed" "$(replicas statefulset spire-server spire) $(instances spire-postgres spire)" "3 3"
pgr_run services/spire.lua --resume --yes; rc=$?
is "--resume completes" "$rc" 0
[ "$rc" = 0 ] || show_out 30
key=$(jq -r 'select(.event == "safety_backup") | .name' "$(newest_run)/journal.jsonl")
is "one safety backup was made, by the resumed run" "$(pgr_names)" "${before}${key} "
is "the killed upload was aborted (its parts are gone)" \
   "$(UP=$upload K=$key "$PGR" -e 'local c = assert(require("pgr.s3").connect{})
      local ok, err = c:abort_upload("postgres-backup", os.getenv("K") .. ".psql", os.getenv("UP")) print(ok or err.code)')" NoSuchUpload
grep -q "^the data as it was before this run can be restored with: pgr run services/spire.lua --backup $key\$" "$E2E/out"
ok $? "the last line is the way back"
is "the chosen backup is restored" "$(fingerprint spire-postgres spire)" "$FPB"

# ---------------------------------------------------------------- a master that does not answer
sql spire-postgres postgres "ALTER ROLE postgres NOLOGIN" || bail "lock postgres out"
pgr_run services/spire.lua --backup "$CHOSEN" --yes; rc=$?
is "a master whose database cannot be dumped: the run stops before anything changes (exit 3)" "$rc" 3
grep -q "cannot back up spire/spire-postgres before changing it: .*Nothing has been changed.*run again with --no-safety-backup" "$E2E/out"
ok $? "it says why and how to go on without a way back"
is "spire-server was not touched" "$(replicas statefulset spire-server spire)" 3
pgr_run services/spire.lua --backup "$CHOSEN" --no-safety-backup --yes; rc=$?
is "--no-safety-backup goes on: exit 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
grep -q "warning: no safety backup (--no-safety-backup)" "$E2E/out"; ok $? "it warns that the run has no way back"
grep -q "can be restored with" "$E2E/out"; is "no way back is printed" "$?" 1
is "the journal records the skip" "$(jq -r 'select(.event == "safety_backup") | .skipped' "$(newest_run)/journal.jsonl")" "--no-safety-backup"
is "the chosen backup is restored" "$(fingerprint spire-postgres spire)" "$FPB"
done_testing
