#!/usr/bin/env bash
# tests/pg/spilo.t — `pgr restore` of a backup as CSM's job makes it (pg_dumpall -c of a cluster
# holding Spilo's bootstrap objects) into fresh Spilo-like servers (Spilo's bootstrap, pg_cron's
# launcher connected to postgres, the operator's roles and database): exit 0 and the result equal to
# psql's; a real error still fails and is listed; --strict counts every error; a dump that drops a
# database it never re-creates is refused with nothing changed.
# Where the fixture is not the field: Debian's PostgreSQL 15 on both sides (CSM's job dumps with a
# PostgreSQL 12 client from 12-14 servers); pg_auth_mon/bg_mon are missing (tests/kubesim/ksim/spilo.py).
set -u
cd "$(dirname "$0")/../.."
PGR=${PGR:-$PWD/pgr}
LIB=$PWD/tests/lib/pgserver.sh
SPILO=tests/kubesim/ksim/spilo.py
T=$(mktemp -d /tmp/pgr-spilo-t.XXXXXX)
chmod 755 "$T"
servers=()
cleanup() {
  for d in "${servers[@]}"; do "$LIB" down "$d"; done
  rm -rf "$T"
}
trap cleanup EXIT
export PGPASSWORD=pgr-test-secret
PGSERVER_OPTS=$(python3 "$SPILO" options) || { echo "Bail out! $SPILO"; exit 1; }
export PGSERVER_OPTS
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else nok "$name"; fi; }

psql_() { local s=$1; shift; eval "psql -X -q -v ON_ERROR_STOP=1 -h \$addr_$s -p \$port_$s -U postgres" '"$@"'; }
conn() { eval "echo host=\$addr_$1 port=\$port_$1 user=postgres dbname=postgres"; }
dumpall() { eval "pg_dumpall -h \$addr_$1 -p \$port_$1 -U postgres" | grep -v '^\\\(un\)\?restrict '; }

# spilo NAME ADDR: a new Spilo cluster as the operator leaves it for Spire (bootstrap, roles, database)
spilo() {
  local d=$T/$1 line
  servers+=("$d")
  line=$("$LIB" up "$d" "$2" 0) || { echo "Bail out! cannot start PostgreSQL ($1)"; exit 1; }
  eval "port_$1=$(echo "$line" | sed 's/.*port=\([0-9]*\).*/\1/')"
  eval "addr_$1=$2"
  { python3 "$SPILO" cluster-sql | psql_ "$1" -d postgres &&
    python3 "$SPILO" database-sql | psql_ "$1" -d postgres &&
    python3 "$SPILO" database-sql | psql_ "$1" -d template1 &&
    psql_ "$1" -d postgres <<SQL
CREATE ROLE standby LOGIN REPLICATION PASSWORD 'standby-of-$1';
CREATE ROLE service_account LOGIN SUPERUSER CREATEDB PASSWORD 'sa-of-$1';
CREATE ROLE spire LOGIN CREATEDB PASSWORD 'spire-of-$1';
CREATE DATABASE spire OWNER spire;
SQL
  } >"$T/$1.setup" 2>&1 || { echo "Bail out! Spilo bootstrap of $1 failed: $(tail -3 "$T/$1.setup")"; exit 1; }
}

# ---- the source: a Spire cluster in use, dumped as CSM's job does
spilo src 127.21.2.1
psql_ src -d spire >"$T/src.log" 2>&1 <<'SQL' || nok "source data" "$(tail -3 "$T/src.log")"
SET ROLE spire;
CREATE TABLE registered_entries (id serial PRIMARY KEY, entry_id text UNIQUE, ttl integer);
INSERT INTO registered_entries (entry_id, ttl) SELECT md5('e' || g), 3600 FROM generate_series(1, 500) g;
CREATE TABLE selectors (id serial PRIMARY KEY, registered_entry_id integer REFERENCES registered_entries(id), value text);
INSERT INTO selectors (registered_entry_id, value) SELECT g, 'k8s:ns:services' FROM generate_series(1, 500) g;
SQL
check "pg_cron's launcher stays connected to postgres, as on Spilo" \
  test "$(psql_ src -d postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher' AND datname = 'postgres'")" = 1
eval "pg_dumpall -c -h \$addr_src -p \$port_src -U postgres" > "$T/csm.psql"
check "the dump is CSM's: DROP DATABASE and DROP ROLE without IF EXISTS" \
  grep -q '^DROP ROLE postgres;$' "$T/csm.psql"
grep -q 'IF EXISTS' <(grep '^DROP \(ROLE\|DATABASE\)' "$T/csm.psql") && nok "no IF EXISTS" || ok "no IF EXISTS"

# ---- psql, the runbook's way, and pgr restore into two fresh clusters: the same result
spilo viapsql 127.21.2.2
psql_ viapsql -v ON_ERROR_STOP=0 -d postgres -f "$T/csm.psql" >"$T/psql.log" 2>&1
psql_errors=$(grep -c 'ERROR:' "$T/psql.log")
check "psql meets errors on this restore and goes on ($psql_errors)" test "$psql_errors" -gt 10

spilo viapgr 127.21.2.3
out=$("$PGR" restore -q --conn "$(conn viapgr)" "$T/csm.psql" 2>&1); rc=$?
if [ "$rc" = 0 ]; then ok "pgr restore of a CSM backup into a fresh Spilo cluster exits 0"
else nok "pgr restore of a CSM backup into a fresh Spilo cluster exits 0" "rc=$rc" "$(head -20 <<<"$out")"; fi
check "its summary names the expected classes once, with counts and reasons" \
  grep -qE '^  expected ×4 role_kept: role cannot be dropped' <<<"$out"
check "  ... database postgres in use by pg_cron, restored in place" grep -qE '^  expected ×1 database_in_use: ' <<<"$out"
check "  ... Spilo's objects in postgres" grep -qE '^  expected ×[0-9]+ object_exists: ' <<<"$out"
check "  ... as many errors as psql met, 0 unexpected" grep -qE "[0-9]+ statements, 1000 COPY rows, $psql_errors errors \(0 unexpected\)" <<<"$out"
dumpall viapsql > "$T/viapsql.dump"; dumpall viapgr > "$T/viapgr.dump"
if cmp -s "$T/viapsql.dump" "$T/viapgr.dump"; then ok "pg_dumpall after pgr equals pg_dumpall after psql"
else nok "pg_dumpall after pgr equals pg_dumpall after psql" "$(diff "$T/viapsql.dump" "$T/viapgr.dump" | head -20)"; fi
dumpall src > "$T/src.dump"
if cmp -s "$T/src.dump" "$T/viapgr.dump"; then ok "... and equals the source's"
else nok "... and equals the source's" "$(diff "$T/src.dump" "$T/viapgr.dump" | head -20)"; fi
login() { PGPASSWORD=$2 psql -X -h "$addr_viapgr" -p "$port_viapgr" -U spire -d spire -Atc 'select 1' 2>&1; }
if [ "$(login viapgr spire-of-src)" = 1 ] && login viapgr spire-of-viapgr | grep -q 'password authentication failed'; then
  ok "spire logs in with the source's password after the restore, no longer with the new cluster's"
else nok "spire logs in with the source's password after the restore"; fi

# ---- a dump with a real error still fails, and the error is listed with its line
sed 's/^COPY public.selectors (id, registered_entry_id, value)/COPY public.selectors (id, registered_entry_id, value, gone)/' \
  "$T/csm.psql" > "$T/broken.psql"
spilo broken 127.21.2.4
out=$("$PGR" restore -q --conn "$(conn broken)" "$T/broken.psql" 2>&1); rc=$?
if [ "$rc" = 1 ] && grep -qE '^  line [0-9]+ \[42703\] spire: column "gone" of relation "selectors" does not exist' <<<"$out" &&
   grep -qE '\(1 unexpected\)' <<<"$out"; then
  ok "a COPY into a missing column is the one unexpected error: exit 1, listed with its line"
else nok "a COPY into a missing column is the one unexpected error" "rc=$rc" "$(head -20 <<<"$out")"; fi

# ---- --strict: every error counts
spilo strict 127.21.2.5
out=$("$PGR" restore -q --strict --conn "$(conn strict)" "$T/csm.psql" 2>&1); rc=$?
if [ "$rc" = 1 ] && grep -qE "$psql_errors errors \($psql_errors unexpected\)" <<<"$out"; then ok "--strict: every error is unexpected, exit 1"
else nok "--strict: every error is unexpected, exit 1" "rc=$rc" "$(head -8 <<<"$out")"; fi

# ---- pg.restore's skip: the statement pgr run knows must fail (its own session holds postgres) is not sent
spilo skip 127.21.2.6
out=$(CONN="$(conn skip)" DUMP="$T/csm.psql" "$PGR" -e '
  local pg = require "pgr.pg"
  local admin = assert(pg.connect(os.getenv("CONN")))   -- as pgr run holds postgres through the stream
  local p = require("pgr.restorepolicy").new {}
  local r = assert(pg.restore(os.getenv("CONN"), os.getenv("DUMP"), { on_error = p.on_error,
    skip = require("pgr.restorepolicy").RUN_SKIP }))
  local in_use = 0
  for _, f in ipairs(r.errors.first) do if f.sqlstate == "55006" and f.statement:find("DATABASE") then in_use = in_use + 1 end end
  print(r.skipped, r.errors.unexpected, in_use, r.ok)
  admin:close()' 2>&1)
if [ "$out" = "1	0	0	true" ]; then ok "DROP DATABASE postgres is not sent when skipped: counted, no 55006, 0 unexpected"
else nok "DROP DATABASE postgres is not sent when skipped" "$out"; fi
dumpall skip > "$T/skip.dump"
if cmp -s "$T/viapsql.dump" "$T/skip.dump"; then ok "... and the result still equals psql's"
else nok "... and the result still equals psql's" "$(diff "$T/viapsql.dump" "$T/skip.dump" | head -10)"; fi

# ---- a dump dropping a database it never creates again is refused; nothing is sent
grep -v '^CREATE DATABASE spire ' "$T/csm.psql" > "$T/nocreate.psql"
before=$(psql_ broken -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = 'spire'")
out=$("$PGR" restore -q --conn "$(conn broken)" "$T/nocreate.psql" 2>&1); rc=$?
after=$(psql_ broken -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = 'spire'")
if [ "$rc" = 3 ] && grep -q 'drops database spire but never creates it again' <<<"$out" && [ "$before" = 1 ] && [ "$after" = 1 ]; then
  ok "a dump that drops spire without creating it is refused (exit 3), spire untouched"
else nok "a dump that drops spire without creating it is refused" "rc=$rc before=$before after=$after" "$(head -5 <<<"$out")"; fi

echo "1..$n"
