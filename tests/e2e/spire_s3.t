#!/usr/bin/env bash
# tests/e2e/spire_s3.t — Spire restored from the postgres-backup bucket of a real S3 server (radosgw):
# the newest complete backup with its manifest (loaded over 2 connections), then a named backup that
# has no manifest, then the operator's gzip'd logical backup (the other layout, no manifest by design).
. "$(dirname "$0")/lib.sh"
e2e_up
e2e_s3_up
USERS="postgres service_account spire standby"
# `pgr run spire` finds services/ beside the binary (the build tree); a binary elsewhere (build/asan)
# is given the path
spire=spire; [ -f "$(dirname "$PGR")/services/spire.lua" ] || spire=$ROOT/services/spire.lua

backup spire-postgres
fp0=$(fingerprint spire-postgres spire)
s3_upload "$DUMP" "$MANIFEST"
# a newer dump without its manifest: not complete, so not the default choice
name=$(basename "$DUMP" .psql)
lonely=$BACKUP/spire-postgres-2099-01-01T00:00:00.psql
cp "$DUMP" "$lonely"
s3_upload "$lonely"

sql spire-postgres spire "DELETE FROM selectors; DROP TABLE bundles" || bail "break spire"
pgr_run "$spire" --yes --jobs 2
rc=$?
is "pgr run spire --jobs 2 (newest complete backup in S3) exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
grep -q "COPY rows, .*, 2 connections" "$E2E/out"; ok $? "the dump was loaded over 2 connections (fed from one read of the object)"
grep -q "s3://postgres-backup/$name.psql" "$E2E/out"; ok $? "the newest complete backup was chosen ($name)"
grep -q "4 secrets re-created from the manifest" "$E2E/out"; ok $? "the backup's manifest was applied"
grep -q "^warning: the S3 endpoint $S3_ENDPOINT is plain HTTP" "$E2E/out"; ok $? "the run warns that the S3 endpoint is plain HTTP"
is "the spire database equals the backup" "$(fingerprint spire-postgres spire)" "$fp0"
is "every secret's user logs in with its password" "$(logins spire-postgres spire $USERS)" "$USERS "
is "spire-server replicas restored" "$(replicas statefulset spire-server spire)" 3

sql spire-postgres spire "DELETE FROM selectors WHERE id > 300; DELETE FROM registered_entries WHERE id > 300" || bail "break spire again"
pgr_run "$spire" --backup spire-postgres-2099-01-01T00:00:00 --yes
rc=$?
is "pgr run spire --backup NAME (no manifest in S3) exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
grep -q "passwords set from the current secrets" "$E2E/out"; ok $? "without a manifest the passwords were set from the secrets"
is "the spire database equals the backup again" "$(fingerprint spire-postgres spire)" "$fp0"
is "every secret's user logs in with its password" "$(logins spire-postgres spire $USERS)" "$USERS "

# the operator's logical backup (newer CSM): gzip'd under spilo/<cluster>/<uid>/logical_backups/, no manifest
sql spire-postgres spire "INSERT INTO migrations (version, code_version) VALUES (15, 'operator-backup')" || bail "mark"
fp1=$(fingerprint spire-postgres spire)
backup spire-postgres operator
key=${DUMP#"$BACKUP"/}
case $key in spilo/spire-postgres/*/logical_backups/*.sql.gz) ok 0 "the operator's key: $key" ;; *) ok 1 "the operator's key: $key" ;; esac
s3_put "$DUMP" "$key"
"$PGR" backups spire >"$E2E/backups.out" 2>&1
grep -qE "spire-postgres +operator +[0-9.]+ [KM]iB +complete +${key%.sql.gz}\$" "$E2E/backups.out"; ok $? "pgr backups lists the operator's backup as such"
grep -qE "spire-postgres +csm +.* +no \.manifest +spire-postgres-2099-01-01T00:00:00\$" "$E2E/backups.out"
ok $? "... beside CSM's, the one without its manifest marked incomplete"
sql spire-postgres spire "DELETE FROM selectors; DELETE FROM migrations" || bail "break spire a third time"
pgr_run "$spire" --backup "${key%.sql.gz}" --yes
rc=$?
is "pgr run spire --backup <the operator's logical backup> exits 0" "$rc" 0
[ "$rc" = 0 ] || show_out 40
grep -q "passwords set from the current secrets" "$E2E/out"; ok $? "no manifest: the passwords were set from the secrets"
grep -q "gzip'd of PostgreSQL" "$E2E/out"; ok $? "preflight saw a gzip'd pg_dumpall"
is "the spire database equals the operator's backup" "$(fingerprint spire-postgres spire)" "$fp1"
is "every secret's user logs in with its password" "$(logins spire-postgres spire $USERS)" "$USERS "
SAME_PASSWORDS=no same_as_psql "spire from the operator's backup" spire-postgres spire "$DUMP"

pgr_run "$spire" --backup spire-postgres-1999-01-01T00:00:00 --yes
is "a backup that is not in S3 stops the run in preflight (exit 3)" "$?" 3
grep -q "no backup named spire-postgres-1999-01-01T00:00:00" "$E2E/out"; ok $? "the message names the missing backup"
done_testing
