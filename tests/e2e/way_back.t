#!/usr/bin/env bash
# tests/e2e/way_back.t — the way back, end to end on the sandbox with a real radosgw: `pgr run` backs up the
# live cluster before changing it (pg_dumpall -c in the master pod, its secrets' manifest, to S3 under pgr/),
# and `pgr run --backup <that backup>` brings back exactly the data, roles and logins it held (Spire, HSM); a
# run whose chosen dump fails at the stream prints the way back and that exact command works; `pgr backup`'s
# output restores through pgr run (pg_dumpall -c dumps into fresh clusters: lua/pgr/restorepolicy.lua's
# expected failures, e.g. DROP ROLE of the marker role the fresh cluster lacks).
# (pgr backup itself, its psql restore, kills mid-upload and --no-safety-backup: tests/e2e/backup.t.)
. "$(dirname "$0")/lib.sh"
E2E_NODES=0 e2e_up
e2e_s3_up
site_without_nodes # the fan-out step is not what is tested here
USERS="postgres service_account spire standby"

# roles as pg_dumpall sees them (name and attributes), one line
roles() { sql "$1" postgres "SELECT string_agg(rolname || ':' || rolsuper || rolcanlogin || rolreplication || rolcreatedb, ' '
                              ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_'"; }
# marker_login CLUSTER: whether the marker role logs in with its own password (it exists only before the run)
marker_login() {
  local host
  host=$(cluster_json "$1" | jq -r .host)
  PGPASSWORD=marker-password-1 PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -Atq -h "$host" -U way_back_marker -d postgres \
    -c 'select 1' 2>/dev/null
}
# way_back_of: the way-back command the last pgr run printed (its last lines or its failure's)
way_back_of() { sed -n -e 's/^the data as it was before this run can be restored with: //p' \
                       -e 's/^or go back to the data as it was before this run: //p' "$E2E/out" | tail -1; }
# run_line CMD: runs a printed `pgr run ...` line as it is, with this build's pgr and --yes
run_line() { eval "timeout 600 \"\$PGR\" ${1#pgr } --yes" >"$E2E/out" 2>&1; }

# ---------------------------------------------------------------- Spire: the chosen backup, then the way back
backup spire-postgres # the chosen one: taken before the markers below
s3_upload "$DUMP" "$MANIFEST"
CHOSEN=$(basename "$DUMP" .psql)
sql spire-postgres spire "CREATE TABLE way_back_rows (id int PRIMARY KEY, note text);
                          INSERT INTO way_back_rows SELECT g, 'written after the nightly backup' FROM generate_series(1, 500) g;
                          DELETE FROM selectors WHERE id % 7 = 0" || bail "markers"
sql spire-postgres postgres "CREATE ROLE way_back_marker LOGIN PASSWORD 'marker-password-1'" || bail "marker role"
FPA=$(fingerprint spire-postgres spire); ROLESA=$(roles spire-postgres)
[ "$(marker_login spire-postgres)" = 1 ] || bail "the marker role does not log in"

pgr_run services/spire.lua --backup "$CHOSEN" --yes; rc=$?
is "spire: the run restoring the chosen backup exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
grep -q "^$(step_tag spire "Back up spire-postgres")"' ok   Back up spire-postgres as it is now, where no retention deletes it (the way back)  ([0-9.]*s)  s3://postgres-backup/pgr/spire-postgres-' "$E2E/out"
ok $? "spire: the safety-backup step backed up the live cluster to S3 under pgr/"
BACK=$(way_back_of)
case $BACK in "pgr run services/spire.lua --backup pgr/spire-postgres-"????-??-??T??:??:??) ok 0 "spire: the last line is the way back: $BACK";;
  *) ok 1 "spire: the last line is the way back"; show_out 5;; esac
SAFETY=${BACK##* }
run=$(newest_run)
is "spire: the journal records the safety backup" "$(jq -r 'select(.event == "safety_backup") | .name' "$run/journal.jsonl")" "$SAFETY"
is "spire: the chosen backup is restored (no marker table)" \
   "$(sql spire-postgres spire "SELECT count(*) FROM pg_tables WHERE tablename = 'way_back_rows'")" 0
[ "$(fingerprint spire-postgres spire)" != "$FPA" ]; ok $? "spire: the data differs from the pre-run data"
"$PGR" backups spire >"$E2E/list" 2>&1
grep -q "complete (pgr)  $SAFETY\$" "$E2E/list"; ok $? "spire: pgr backups lists the safety backup beside the nightly ones, marked (pgr)"
grep -Eq "complete +$CHOSEN\$" "$E2E/list"; ok $? "spire: ... and the nightly one unmarked"

run_line "$BACK"; rc=$?
is "spire: the way back ($BACK) exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "spire: the way back brings back exactly the pre-run data" "$(fingerprint spire-postgres spire)" "$FPA"
is "spire: ... the same roles with the same attributes" "$(roles spire-postgres)" "$ROLESA"
is "spire: ... the marker role logs in with its own password again" "$(marker_login spire-postgres)" 1
is "spire: ... every secret's user logs in" "$(logins spire-postgres spire $USERS)" "$USERS "
is "spire: ... spire-server at its 3 replicas" "$(replicas statefulset spire-server spire)" 3

# ---------------------------------------------------------------- a chosen dump that fails at the stream
sed 's/^\\connect spire$/&\nINSERT INTO no_such_table VALUES (1);/' "$DUMP" > "$E2E/spire-postgres-2030-01-01T00:00:00.psql"
cp "$MANIFEST" "$E2E/spire-postgres-2030-01-01T00:00:00.manifest"
s3_upload "$E2E/spire-postgres-2030-01-01T00:00:00.psql" "$E2E/spire-postgres-2030-01-01T00:00:00.manifest"
pgr_run services/spire.lua --backup spire-postgres-2030-01-01T00:00:00 --yes; rc=$?
is "bad dump: the run fails (exit 1)" "$rc" 1
grep -q "^\\[$(step_no spire "Stream the dump")/$(step_count spire)\\] FAIL Stream the dump into the master pod" "$E2E/out"; ok $? "bad dump: it fails at the stream"
BACK=$(way_back_of)
case $BACK in "pgr run services/spire.lua --new --backup pgr/spire-postgres-"*) ok 0 "bad dump: the failure prints the way back: $BACK";;
  *) ok 1 "bad dump: the failure prints the way back"; show_out 8;; esac
run_line "$BACK"; rc=$?
is "bad dump: that exact command exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
grep -q "kept from run " "$E2E/out"; ok $? "bad dump: the --new run keeps the failed run's safety backup (no backup of the half-restored cluster)"
is "bad dump: the data is back as it was before the failed run" "$(fingerprint spire-postgres spire)" "$FPA"
is "bad dump: ... roles too" "$(roles spire-postgres)" "$ROLESA"
is "bad dump: ... spire-server back at 3 replicas" "$(replicas statefulset spire-server spire)" 3
is "bad dump: ... spire-postgres back at 3 instances" "$(instances spire-postgres spire)" 3

# ---------------------------------------------------------------- pgr backup, restored by pgr run
out=$("$PGR" backup spire 2>&1); rc=$?
is "pgr backup spire exits 0" "$rc" 0
B1=$(sed -n 's/^restore it with: pgr run spire --backup //p' <<<"$out")
[ -n "$B1" ] || echo "$out" | sed 's/^/# /'
sql spire-postgres spire "DELETE FROM selectors" || bail "break for pgr run"
pgr_run services/spire.lua --backup "$B1" --yes; rc=$?
is "pgr backup's S3 backup restores through pgr run --backup $B1" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "... and the data equals the backed-up data" "$(fingerprint spire-postgres spire)" "$FPA"
is "... roles and logins too" "$(roles spire-postgres) $(logins spire-postgres spire $USERS)" "$ROLESA $USERS "

# ---------------------------------------------------------------- HSM: the same round trip
HUSERS="postgres service_account hmsdsuser standby"
export FP_EXCLUDE=--exclude-table-data=comp_eth_interfaces # the procedure empties it for rediscovery
backup cray-smd-postgres
s3_upload "$DUMP" "$MANIFEST"
HCHOSEN=$(basename "$DUMP" .psql)
sql cray-smd-postgres hmsds "UPDATE components SET state = 'Off' WHERE type = 'Node'; DELETE FROM rf_endpoints WHERE id LIKE '%3'" || bail "hsm markers"
sql cray-smd-postgres postgres "CREATE ROLE way_back_marker LOGIN PASSWORD 'marker-password-1'" || bail "hsm marker role"
HFPA=$(fingerprints cray-smd-postgres hmsds); HROLESA=$(roles cray-smd-postgres)
pgr_run services/hsm.lua --backup "$HCHOSEN" --yes; rc=$?
is "hsm: the run restoring the chosen backup exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
BACK=$(way_back_of)
case $BACK in "pgr run services/hsm.lua --backup pgr/cray-smd-postgres-"*) ok 0 "hsm: the last line is the way back";;
  *) ok 1 "hsm: the last line is the way back"; show_out 5;; esac
[ "$(fingerprints cray-smd-postgres hmsds)" != "$HFPA" ]; ok $? "hsm: the chosen backup's data differs from the pre-run data"
run_line "$BACK"; rc=$?
is "hsm: the way back exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 30
is "hsm: the way back brings back exactly the pre-run data" "$(fingerprints cray-smd-postgres hmsds)" "$HFPA"
is "hsm: ... the same roles" "$(roles cray-smd-postgres)" "$HROLESA"
is "hsm: ... the marker role logs in again" "$(marker_login cray-smd-postgres)" 1
is "hsm: ... every secret's user logs in" "$(logins cray-smd-postgres services $HUSERS)" "$HUSERS "
done_testing
