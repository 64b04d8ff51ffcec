#!/usr/bin/env bash
# tests/pg/restore.t — `pgr restore` against real PostgreSQL servers: the result equals psql's
# (pg_dumpall of both compared) serially, with --jobs and from gzip on stdin; every refused input.
set -u
cd "$(dirname "$0")/../.."
PGR=${PGR:-$PWD/pgr}
LIB=$PWD/tests/lib/pgserver.sh
T=$(mktemp -d /tmp/pgr-restore-t.XXXXXX)
chmod 755 "$T"
servers=()
cleanup() {
  for d in "${servers[@]}"; do "$LIB" down "$d"; done
  rm -rf "$T"
}
trap cleanup EXIT
export PGPASSWORD=pgr-test-secret
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "#   $l"; done; }

# up NAME ADDR: a fresh server; sets port_NAME
up() {
  local d=$T/$1
  servers+=("$d")
  local line
  line=$("$LIB" up "$d" "$2" 0) || { echo "Bail out! cannot start PostgreSQL ($1)"; exit 1; }
  eval "port_$1=$(echo "$line" | sed 's/.*port=\([0-9]*\).*/\1/')"
  eval "addr_$1=$2"
}
conn() { eval "echo host=\$addr_$1 port=\$port_$1 user=postgres dbname=postgres"; }
psql_() { local s=$1; shift; eval "psql -X -q -h \$addr_$s -p \$port_$s -U postgres" '"$@"'; }
# pg_dumpall without the random \restrict keys
dumpall() { eval "pg_dumpall -h \$addr_$1 -p \$port_$1 -U postgres" | grep -v '^\\\(un\)\?restrict '; }
same_dump() { # name server-a server-b
  dumpall "$2" > "$T/$2.dump"; dumpall "$3" > "$T/$3.dump"
  if cmp -s "$T/$2.dump" "$T/$3.dump"; then ok "$1"; else nok "$1" "$(diff "$T/$2.dump" "$T/$3.dump" | head -20)"; fi
}
# expect NAME WANT-RC PATTERN CMD...: runs CMD, checks exit code and that stderr+stdout match PATTERN
expect() {
  local name=$1 want=$2 pat=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" = "$want" ] && grep -qE -- "$pat" <<<"$out"; then ok "$name"
  else nok "$name" "rc=$rc (want $want), output:" "$(head -c 1500 <<<"$out")"; fi
}

# ---- the corpus: a nasty cluster, dumped by pg_dumpall
up src 127.21.1.1
if psql_ src -v ON_ERROR_STOP=1 -d postgres -f tests/pg/corpus.sql >"$T/corpus.log" 2>&1; then
  ok "corpus builds on the source server"
else
  nok "corpus builds on the source server" "$(tail -5 "$T/corpus.log")"
fi
dumpall src > "$T/dump.sql"
eval "pg_dumpall -h \$addr_src -p \$port_src -U postgres" > "$T/dump.sql"
grep -q '^\\restrict ' "$T/dump.sql" && grep -q -- '-reuse-previous=on' "$T/dump.sql" &&
  ok "the dump has \\restrict and \\connect -reuse-previous forms" || nok "dump forms"

up psql 127.21.1.2
psql_ psql -d postgres -f "$T/dump.sql" >"$T/psql.log" 2>&1

up serial 127.21.1.3
"$PGR" restore --conn "$(conn serial)" "$T/dump.sql" > "$T/serial.out" 2>&1; rc=$?
if [ $rc = 0 ] && grep -q '1 errors (0 unexpected)' "$T/serial.out" && grep -q 'expected ×1 role_exists: ' "$T/serial.out"; then
  ok "pgr restore (serial) succeeds; only the expected error"
else
  nok "pgr restore (serial) succeeds; only the expected error" "rc=$rc" "$(cat "$T/serial.out")"
fi
grep -qE '^restore: [0-9.]+ MiB in [0-9.]+' "$T/serial.out" && ok "a plain progress summary line without a terminal" ||
  nok "a plain progress summary line without a terminal" "$(cat "$T/serial.out")"
same_dump "serial restore equals psql's" psql serial

up jobs 127.21.1.4
expect "pgr restore --jobs 3 succeeds" 0 '0 unexpected' "$PGR" restore --jobs 3 --conn "$(conn jobs)" "$T/dump.sql"
same_dump "parallel restore equals psql's" psql jobs

up jobs2 127.21.1.10
expect "pgr restore --jobs 2 succeeds" 0 '0 unexpected' "$PGR" restore --jobs 2 --conn "$(conn jobs2)" "$T/dump.sql"
same_dump "parallel restore (2 connections) equals psql's" psql jobs2

up gz 127.21.1.5
gzip -c "$T/dump.sql" > "$T/dump.sql.gz"
out=$(eval "PGHOST=\$addr_gz PGPORT=\$port_gz PGUSER=postgres" "$PGR" restore --quiet - < "$T/dump.sql.gz" 2>&1)
[ $? = 0 ] && ok "gzip on stdin, connection from PG* variables" || nok "gzip on stdin" "$out"
same_dump "gzip stdin restore equals psql's" psql gz

# ---- a hand-written script: quoting forms pg_dump never writes
sed 's/crlf line.)$/&\r/' tests/pg/handwritten.sql > "$T/hw.sql"
up hwpsql 127.21.1.6
psql_ hwpsql -d postgres -f "$T/hw.sql" >"$T/hwpsql.log" 2>&1
up hwpgr 127.21.1.7
expect "hand-written script restores without errors" 0 '0 errors' "$PGR" restore --strict --conn "$(conn hwpgr)" "$T/hw.sql"
same_dump "hand-written script: same result as psql" hwpsql hwpgr
rows=$(psql_ hwpgr -d postgres -Atc "select count(*) from public.hw")
[ "$rows" = 13 ] && ok "all 13 rows of the hand-written table arrived" || nok "hand-written rows" "got $rows"

# ---- refused inputs: nothing is sent
up bad 127.21.1.8
B=$(conn bad)
psql_ bad -d postgres -c "create database custom_src" -c "create table t(a int)" >/dev/null
eval "pg_dump -h \$addr_bad -p \$port_bad -U postgres -Fc postgres" > "$T/custom.dump"
eval "pg_dump -h \$addr_bad -p \$port_bad -U postgres -Ft postgres" > "$T/tar.dump"
expect "custom-format archive is refused" 3 'custom-format archive.*pg_restore' "$PGR" restore --conn "$B" "$T/custom.dump"
expect "tar archive is refused" 3 'tar archive' "$PGR" restore --conn "$B" "$T/tar.dump"
printf 'select 1;\nselect\0 2;\n' > "$T/nul.sql"
expect "NUL byte is refused with its offset" 3 'NUL byte at offset 16' "$PGR" restore --conn "$B" "$T/nul.sql"
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "%c%c%c", 1 + i % 7, 65 + i % 20, 14 + i % 10 }' > "$T/garbage.bin"
expect "binary garbage is refused" 3 'looks binary \(control byte 0x01 at offset 0\)' "$PGR" restore --conn "$B" "$T/garbage.bin"
: > "$T/empty.sql"
expect "an empty dump is refused" 3 'the dump is empty' "$PGR" restore --conn "$B" "$T/empty.sql"
head -c 40000 "$T/dump.sql" > "$T/trunc.sql"
expect "a truncated file is refused before anything runs" 3 'truncated \(nothing was restored' "$PGR" restore --conn "$B" "$T/trunc.sql"
[ "$(psql_ bad -d postgres -Atc "select count(*) from pg_roles where rolname = 'app'")" = 0 ] &&
  ok "the truncated dump changed nothing" || nok "the truncated dump changed nothing"
expect "a truncated stream is reported after the fact" 1 'without the "dump complete" trailer: it is truncated' \
  sh -c "cat '$T/trunc.sql' | '$PGR' restore --quiet --conn '$B' -"
head -c 30000 "$T/dump.sql.gz" > "$T/trunc.gz"
expect "a truncated gzip stream is reported" 1 'gzip stream ends early' \
  sh -c "cat '$T/trunc.gz' | '$PGR' restore --quiet --conn '$B' -"
printf 'create table pre_meta(a int);\n\\! echo pwned\nselect 2;\n' > "$T/shell.sql"
expect "an unsupported meta-command in a file is refused before anything runs" 3 \
  'shell.sql line 2: meta-command \\! is not supported.*nothing was restored' \
  "$PGR" restore --allow-truncated --conn "$B" "$T/shell.sql"
[ "$(psql_ bad -d postgres -Atc "select count(*) from pg_class where relname = 'pre_meta'")" = 0 ] &&
  ok "nothing ran before the refused meta-command" || nok "nothing ran before the refused meta-command"
expect "an unsupported meta-command on a stream stops at its line" 1 'line 2: meta-command \\! is not supported' \
  sh -c "'$PGR' restore --quiet --allow-truncated --conn '$B' - < '$T/shell.sql'"
printf '\\restrict k1\nselect 1;\n\\connect postgres\n' > "$T/restricted.sql"
expect "\\connect in restricted mode is refused" 1 'line 3: \\connect is not allowed in restricted mode' \
  "$PGR" restore --allow-truncated --conn "$B" "$T/restricted.sql"
printf '\\restrict k1\n\\unrestrict k2\n' > "$T/badkey.sql"
expect "\\unrestrict with the wrong key is refused" 1 'line 2: \\unrestrict is not allowed' \
  "$PGR" restore --allow-truncated --conn "$B" "$T/badkey.sql"
printf 'create table s1(a int);\nselect nosuch;\ncreate table s2(a int);\n' > "$T/stop.sql"
printf 'create table s3(a int);\nselect nosuch;\ncreate table s4(a int);\n' > "$T/go.sql"
expect "--stop-on-error stops at the first unexpected error" 1 'line 2 \[42703\]' \
  "$PGR" restore --stop-on-error --allow-truncated --conn "$B" "$T/stop.sql"
[ "$(psql_ bad -d postgres -Atc "select count(*) from pg_class where relname in ('s1', 's2')")" = 1 ] &&
  ok "nothing ran after the stop" || nok "nothing ran after the stop"
expect "errors go on by default and are counted" 1 '1 errors \(1 unexpected\)' \
  "$PGR" restore --allow-truncated --conn "$B" "$T/go.sql"
expect "an unreachable server is a preflight failure" 3 'cannot connect' \
  "$PGR" restore --conn "host=127.21.1.8 port=1 user=postgres connect_timeout=3" "$T/dump.sql"
expect "a wrong password is reported without the password" 3 'password authentication failed' \
  "$PGR" restore --conn "$B password=hunter2-secret" "$T/dump.sql"
"$PGR" restore --conn "$B password=hunter2-secret" "$T/dump.sql" 2>&1 | grep -q hunter2 &&
  nok "the password never appears" || ok "the password never appears"

# ---- the server goes away in the middle of a COPY
up kill 127.21.1.9
{
  echo '-- PostgreSQL database cluster dump'
  echo 'CREATE TABLE public.slow (a int);'
  echo 'CREATE FUNCTION public.slow_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$;'
  echo 'CREATE TRIGGER slow BEFORE INSERT ON public.slow FOR EACH ROW EXECUTE FUNCTION public.slow_trg();'
  echo 'COPY public.slow (a) FROM stdin;'
  seq 1 200000
  echo '\.'
  echo '-- PostgreSQL database cluster dump complete'
  echo '--'
} > "$T/slow.sql"
"$PGR" restore --quiet --conn "$(conn kill)" "$T/slow.sql" > "$T/kill.out" 2>&1 &
rpid=$!
killed=0
for _ in $(seq 1 300); do
  r=$(psql_ kill -d postgres -Atc "select pg_terminate_backend(pid) from pg_stat_activity where query like 'COPY public.slow%' and state = 'active'")
  [ "$r" = t ] && { killed=1; break; }
  sleep 0.1
done
wait $rpid; rc=$?
if [ $killed = 1 ] && [ $rc = 1 ] && grep -qE 'connection was lost at line [0-9]+ \(byte offset [0-9]+\)' "$T/kill.out"; then
  ok "a connection killed mid-COPY is reported with line and offset"
else
  nok "connection killed mid-COPY" "killed=$killed rc=$rc" "$(cat "$T/kill.out")"
fi

# ---- --jobs where the order of the loads matters
# A data-only dump into an existing schema: the child's foreign key checks the parent's rows, so its
# load may not run beside the parent's (pg_dump orders such dumps referenced tables first)
up fksrc 127.21.1.11
psql_ fksrc -v ON_ERROR_STOP=1 -d postgres -c "CREATE TABLE public.parent (id int PRIMARY KEY, pad text);
  CREATE TABLE public.child (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
  INSERT INTO public.parent SELECT g, repeat('x', 100) FROM generate_series(1, 300000) g;
  INSERT INTO public.child SELECT g, g FROM generate_series(1, 1000) g;" >/dev/null
eval "pg_dumpall -h \$addr_fksrc -p \$port_fksrc -U postgres --schema-only" > "$T/fkschema.sql"
eval "pg_dumpall -h \$addr_fksrc -p \$port_fksrc -U postgres --data-only" > "$T/fkdata.sql"
up fkdst 127.21.1.12
psql_ fkdst -d postgres -f "$T/fkschema.sql" >/dev/null 2>&1
expect "a data-only dump with a foreign key between its tables loads with --jobs 2" 0 '\(0 unexpected\)|no errors' \
  "$PGR" restore --jobs 2 --conn "$(conn fkdst)" "$T/fkdata.sql"
rows=$(psql_ fkdst -d postgres -Atc "SELECT (SELECT count(*) FROM public.parent) || ' ' || (SELECT count(*) FROM public.child)")
[ "$rows" = "300000 1000" ] && ok "every parent and child row is loaded" || nok "every parent and child row is loaded" "got: $rows"

# --stop-on-error: as with psql's ON_ERROR_STOP, what comes after the first error is not loaded, but
# for the loads other connections had already taken when the error came back (the bad load is the
# second biggest, so one connection takes the small ones after it: a few at most, never all six)
{
  echo 'CREATE TABLE public.big (id int, v text);'
  echo 'CREATE TABLE public.bad (id int);'
  for i in 1 2 3 4 5 6; do echo "CREATE TABLE public.s$i (id int);"; done
  echo 'COPY public.big (id, v) FROM stdin;'
  seq 1 300000 | awk '{ print $1 "\tsome text payload " $1 }'
  echo '\.'
  echo 'COPY public.bad (id) FROM stdin;'
  echo 'not-a-number'
  seq 1 100000
  echo '\.'
  # each small load takes long enough (tens of ms) that the error is seen before a connection runs many
  for i in 1 2 3 4 5 6; do echo "COPY public.s$i (id) FROM stdin;"; seq 1 20000; echo '\.'; done
  echo '--'
  echo '-- PostgreSQL database cluster dump complete'
  echo '--'
} > "$T/stopjobs.sql"
up stopj 127.21.1.13
expect "--stop-on-error with --jobs 2 stops at the bad load" 1 '\[22P02\]' \
  "$PGR" restore --jobs 2 --stop-on-error --conn "$(conn stopj)" "$T/stopjobs.sql"
loaded=$(psql_ stopj -d postgres -Atc "SELECT (SELECT count(*) > 0 FROM public.s1)::int + (SELECT count(*) > 0 FROM public.s2)::int
  + (SELECT count(*) > 0 FROM public.s3)::int + (SELECT count(*) > 0 FROM public.s4)::int
  + (SELECT count(*) > 0 FROM public.s5)::int + (SELECT count(*) > 0 FROM public.s6)::int")
[ "$loaded" -le 3 ] && ok "at most three of the six later tables were loaded ($loaded)" ||
  nok "at most three of the six later tables were loaded" "$loaded were"

# The server going away under --jobs is one failure, reported once, however many loads were queued
{
  echo 'CREATE TABLE public.big1 (id int, v text);'
  echo 'CREATE TABLE public.big2 (id int, v text);'
  for i in 1 2 3 4 5 6; do echo "CREATE TABLE public.q$i (id int);"; done
  for t in big1 big2; do
    echo "COPY public.$t (id, v) FROM stdin;"
    seq 1 1500000 | awk '{ print $1 "\tsome text payload " $1 }'
    echo '\.'
  done
  for i in 1 2 3 4 5 6; do echo "COPY public.q$i (id) FROM stdin;"; seq 1 100; echo '\.'; done
  echo '--'
  echo '-- PostgreSQL database cluster dump complete'
  echo '--'
} > "$T/lost.sql"
up lost 127.21.1.14
"$PGR" restore --jobs 2 --conn "$(conn lost)" "$T/lost.sql" > "$T/lost.out" 2>&1 &
rpid=$!
for _ in $(seq 1 600); do
  [ "$(psql_ lost -d postgres -Atc "select count(*) from pg_stat_activity where query like 'COPY public.big%' and state = 'active'")" = 2 ] && break
  sleep 0.05
done
"$LIB" down "$T/lost"
wait $rpid; rc=$?
if [ $rc = 1 ] && grep -q 'connection was lost' "$T/lost.out" && grep -qE '(^|[^0-9])0 errors' "$T/lost.out"; then
  ok "the server stopping under --jobs 2 is one failure, not an error per queued load"
else
  nok "the server stopping under --jobs 2 is one failure, not an error per queued load" "rc=$rc" "$(head -c 1500 "$T/lost.out")"
fi

echo "1..$n"
