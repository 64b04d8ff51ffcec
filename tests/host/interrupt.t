#!/usr/bin/env bash
# Ctrl-C (SIGINT) or SIGTERM: the first stops the Lua code where it is, with the "interrupted!" error the
# commands turn into their clean-up and exit 130; a second, arriving while that clean-up runs, is
# ignored with a word (timeout(1) delivers one Ctrl-C twice: to the child, then to its process
# group); a third stops pgr at once, by the signal. Every wait here is for an event (a line in
# the output, a file), never for a time.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
PGR=${PGR:-$root/pgr}
T=$(mktemp -d /tmp/pgr-int.XXXXXX)
PID=
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$T"' EXIT
n=0
ok() { n=$((n + 1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; sed 's/^/# | /' "$T/out" 2>/dev/null; fi; }
# until FILE holds REGEX (or the process is gone: then it will never come)
wait_line() {
  while ! grep -qE -- "$2" "$1" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { grep -qE -- "$2" "$1" 2>/dev/null; return; }
    sleep 0.02
  done
}

# The chunk: waits in a loop; on the interrupt it prints what it caught, then "cleans up" until
# the file $T/go exists, and exits 7 (not 130: the shell reports a death by SIGINT as 130 too).
cat > "$T/chunk.lua" <<'LUA'
local sys = require("pgr.sys")
local go = arg[1]
io.stdout:setvbuf("line")
print("ready")
local ok, e = pcall(function() while true do sys.sleep(0.01) end end)
print("caught: " .. tostring(e))
while not io.open(go) do sys.sleep(0.01) end
print("cleaned up")
os.exit(7)
LUA

# interrupted [WRAPPER...]: starts the chunk (through WRAPPER, e.g. timeout 600), waits until it is
# ready, sends one SIGINT and waits until the chunk has caught it
interrupted() {
  rm -f "$T/go" "$T/out"  # no line of the last case may be taken for this one's
  "$@" "$PGR" "$T/chunk.lua" "$T/go" >"$T/out" 2>&1 &
  PID=$!
  wait_line "$T/out" '^ready$'
  kill -INT "$PID"
  wait_line "$T/out" '^caught: '
}
finish() { wait "$PID"; rc=$?; PID=; }

# 1. one Ctrl-C: the code is stopped with "interrupted!", its clean-up runs to the end
interrupted
touch "$T/go"
finish
ok "one SIGINT: the Lua code gets the interrupted! error" 'grep -q "^caught: .*interrupted!" "$T/out"'
ok "one SIGINT: the clean-up ran to its end (exit 7, not killed)" '[ $rc = 7 ] && grep -q "^cleaned up$" "$T/out"'

# 2. a second SIGINT during the clean-up does not stop it; pgr says so
interrupted
kill -INT "$PID"
wait_line "$T/out" 'cleaning up before it stops'
touch "$T/go"
finish
ok "a second SIGINT: the clean-up still ran to its end" '[ $rc = 7 ] && grep -q "^cleaned up$" "$T/out"'
ok "a second SIGINT: pgr says it is cleaning up and how to stop at once" \
  'grep -q "pgr: interrupted; cleaning up before it stops (Ctrl-C again to stop at once" "$T/out"'

# 3. a third stops pgr at once, by SIGINT itself (the shell's 130), without the clean-up
interrupted
kill -INT "$PID"
wait_line "$T/out" 'cleaning up before it stops'
kill -INT "$PID"
finish
ok "a third SIGINT: pgr dies of the signal (status 130), the clean-up cut short" \
  '[ $rc = 130 ] && ! grep -q "^cleaned up$" "$T/out" && grep -q "pgr: stopped at once, without cleaning up" "$T/out"'

# 4. Ctrl-C through timeout(1), as the test suites and cron wrappers run pgr: timeout sends the
#    signal to pgr and again to its process group; the clean-up still runs
interrupted timeout 600
touch "$T/go"
finish
ok "SIGINT through timeout(1): the clean-up ran to its end" '[ $rc = 7 ] && grep -q "^cleaned up$" "$T/out"'

# 5. SIGTERM (timeout(1) on expiry, systemd stopping a unit, kill) takes the same way out
rm -f "$T/go" "$T/out"  # no line of the last case may be taken for this one's
"$PGR" "$T/chunk.lua" "$T/go" >"$T/out" 2>&1 &
PID=$!
wait_line "$T/out" '^ready$'
kill -TERM "$PID"
wait_line "$T/out" '^caught: '
touch "$T/go"
finish
ok "SIGTERM: the Lua code gets the interrupted! error, the clean-up runs to its end" \
  'grep -q "^caught: .*interrupted!" "$T/out" && [ $rc = 7 ] && grep -q "^cleaned up$" "$T/out"'

# 6. timeout(1)'s own expiry: SIGTERM to pgr and its process group, the clean-up still runs.
#    SIGALRM is how timeout's own timer fires; sent by hand, it expires now rather than after a time.
rm -f "$T/go" "$T/out"  # no line of the last case may be taken for this one's
timeout 600 "$PGR" "$T/chunk.lua" "$T/go" >"$T/out" 2>&1 &
PID=$!
wait_line "$T/out" '^ready$'
kill -ALRM "$PID"
wait_line "$T/out" '^caught: '
touch "$T/go"
finish
ok "timeout(1) expiring: the clean-up ran to its end (timeout reports 124)" \
  '[ $rc = 124 ] && grep -q "^caught: .*interrupted!" "$T/out" && grep -q "^cleaned up$" "$T/out"'

# 7. the REPL, waiting at its prompt, ends at a SIGTERM (readline passes the signal on to pgr)
mkfifo "$T/in"
rm -f "$T/out"
sleep 600 >"$T/in" &
HOLD=$!
"$PGR" repl <"$T/in" >"$T/out" 2>&1 &
PID=$!
wait_line "$T/out" '^> '
kill -TERM "$PID"
# a REPL that ignored the signal would wait for input for ever: a watchdog ends it (status 137)
( trap - EXIT; sleep 60; kill -9 "$PID" 2>/dev/null ) &
DOG=$!
finish
kill "$HOLD" "$DOG" 2>/dev/null
ok "SIGTERM ends the REPL at its prompt (status 143)" '[ $rc = 143 ]'

echo "1..$n"
