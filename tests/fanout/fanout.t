#!/usr/bin/env bash
# tests/fanout/fanout.t — `pgr fanout` against real sshd nodes on 127.23.x.y (tests/lib/sshnodes.sh):
# what the user sees (live lines, -b view, summary, exit status) for ok, failing, down, hung and
# refused nodes; the fanout limit seen from the nodes; Ctrl-C leaving no ssh child behind.
set -u
cd "$(dirname "$0")/../.."
: "${PGR:=$PWD/pgr}"
. tests/lib/sshnodes.sh

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
check() { # name, condition-command...
  local name=$1; shift
  if "$@"; then ok "$name"; else nok "$name" "failed: $*"; fi
}
same() { # name got want
  if [ "$2" = "$3" ]; then ok "$1"; else nok "$1" "got:  $(printf '%q' "$2")" "want: $(printf '%q' "$3")"; fi
}

D=$(mktemp -d /tmp/pgr-fanout-t.XXXXXX)
NODES="$D/nodes"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  sshnodes_down "$NODES"
  rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

SSHNODES_DOWN='ncn-x001' SSHNODES_BADAUTH='ncn-y001' \
  sshnodes_up "$NODES" 'ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]' || { echo "not ok 1 - sshd nodes start"; exit 1; }
CFG="$NODES/ssh_config"
pf() { "$PGR" fanout -o "-F $CFG" "$@"; }

# --- all succeed, live output
out=$(pf -w 'ncn-w00[1-3],ncn-m001' -- echo hello '$PGR_NODE' 2>"$D/err"); rc=$?
same "all ok: exit 0" "$rc" 0
same "all ok: one live 'host: line' per host" "$(sort <<<"$out")" \
"ncn-m001: hello ncn-m001
ncn-w001: hello ncn-w001
ncn-w002: hello ncn-w002
ncn-w003: hello ncn-w003"
same "all ok: summary" "$(cat "$D/err")" "4 ok"
for h in ncn-w001 ncn-w002 ncn-w003 ncn-m001; do
  check "the command reached $h" grep -qxF 'echo hello $PGR_NODE' "$NODES/runs/$h"
done
check "no other node was reached" test ! -e "$NODES/runs/ncn-s001"

# --- one exits non-zero
out=$(pf -w 'ncn-s00[1-3]' -- '[ $PGR_NODE = ncn-s002 ] && exit 3; echo fine' 2>"$D/err"); rc=$?
same "one fails: exit 1" "$rc" 1
same "one fails: summary names it with its status" "$(tail -n1 "$D/err")" "2 ok, 1 failed: ncn-s002 (exit 3)"
same "one fails: the others' output" "$(sort <<<"$out")" "ncn-s001: fine
ncn-s003: fine"

# --- down and refused nodes, with the rest fine
out=$(pf -w 'ncn-m00[1-2],ncn-x001,ncn-y001' -- true 2>"$D/err"); rc=$?
same "down + auth: exit 1" "$rc" 1
same "down + auth: summary" "$(tail -n1 "$D/err")" \
  "2 ok, 2 failed: ncn-x001 (connection refused), ncn-y001 (authentication failed)"
check "down: ssh's own message shown live" grep -q '^ncn-x001: ssh: connect to host .*Connection refused' "$D/err"

# --- a hung node: the timeout kills it, the others finish (5 s: on a busy machine the quick
# node's ssh handshake alone can take a second)
start=$(date +%s.%N)
out=$(pf -u 5 -w 'ncn-w00[1-2]' -- '[ $PGR_NODE = ncn-w002 ] && sleep 60; echo done' 2>"$D/err"); rc=$?
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')
same "hang: exit 1" "$rc" 1
same "hang: summary" "$(tail -n1 "$D/err")" "1 ok, 1 failed: ncn-w002 (timed out after 5s)"
check "hang: did not wait for the sleep (${took}s)" awk -v t="$took" 'BEGIN{exit !(t < 50)}'
# ([B] keeps pgrep from finding this shell's own command line)
check "hang: its ssh child is gone" sh -c "! pgrep -f -- '[B]atchMode=yes.*-F $CFG' >/dev/null"

# --- output without a trailing newline, and -b with two groups
out=$(pf -w 'ncn-m00[1-3],ncn-w001' -- 'printf abc' 2>/dev/null)
same "no trailing newline: the line still shows" "$(sort <<<"$out")" "ncn-m001: abc
ncn-m002: abc
ncn-m003: abc
ncn-w001: abc"
out=$(pf -b -w 'ncn-m00[1-3],ncn-w00[1-3]' -- 'case $PGR_NODE in ncn-w*) echo worker; echo two;; *) echo master;; esac' 2>"$D/err"); rc=$?
same "gathered (-b): dshbak -c view" "$out" "----------------
ncn-m[001-003]
----------------
master
----------------
ncn-w[001-003]
----------------
worker
two"
same "gathered: exit 0 and summary" "$rc $(cat "$D/err")" "0 6 ok"

# --- exclusion, and a pdsh-style list
out=$(pf -w 'ncn-m00[1-3],ncn-w00[1-3]' -x 'ncn-w00[2-3]' -x ncn-m002 -- 'echo $PGR_NODE' 2>/dev/null)
same "-x excludes" "$(sort <<<"$out")" "ncn-m001: ncn-m001
ncn-m003: ncn-m003
ncn-w001: ncn-w001"

# --- the fanout limit, seen from the nodes: each counts the commands running beside it
mkdir -p "$D/active" && chmod 777 "$D/active"
pf -f 2 -w 'ncn-m00[1-3],ncn-w00[1-3],ncn-s00[1-3]' -- \
  "touch $D/active/\$PGR_NODE; ls $D/active | wc -l >> $D/seen; sleep 0.3; rm $D/active/\$PGR_NODE" \
  >/dev/null 2>&1; rc=$?
same "fanout 2: all 9 ran" "$rc $(wc -l < "$D/seen")" "0 9"
check "fanout 2: never more than 2 at once (saw $(sort -n "$D/seen" | tail -1))" \
  test "$(sort -n "$D/seen" | tail -1)" -le 2
# and from this side: a fake ssh that counts its own concurrent copies
cat > "$D/fakessh" <<EOF
#!/bin/sh
mkdir "$D/local.\$\$"; ls -d $D/local.* | wc -l >> "$D/lseen"; sleep 0.2; rmdir "$D/local.\$\$"
EOF
chmod +x "$D/fakessh"
"$PGR" fanout --ssh "$D/fakessh" -f 3 -w 'h[1-12]' -- true >/dev/null 2>&1; rc=$?
same "fanout 3 (local ssh count): all 12 ran" "$rc $(wc -l < "$D/lseen")" "0 12"
most=$(sort -n "$D/lseen" | tail -1)
check "fanout 3: at most 3 ssh children at once, and it did run 3 at once (saw $most)" test "$most" -eq 3

# --- a missing ssh program is a per-host failure, not a crash
"$PGR" fanout --ssh /nonexistent/ssh -w 'a,b' -- true >/dev/null 2>"$D/err"; rc=$?
same "missing ssh: exit 1 and reason" "$rc $(tail -n1 "$D/err")" \
  "1 0 ok, 2 failed: a,b (cannot run /nonexistent/ssh: No such file or directory)"

# --- site file: nodes and ssh options come from it when -w is absent
cat > "$D/site.lua" <<EOF
return { nodes = "ncn-s00[1-3]", ssh = { options = { "-F", "$CFG" } } }
EOF
out=$(PGR_SITE="$D/site.lua" "$PGR" fanout -- 'echo $PGR_NODE' 2>"$D/err"); rc=$?
same "site nodes: every site node, exit 0" "$rc $(sort <<<"$out" | tr '\n' ' ')" \
  "0 ncn-s001: ncn-s001 ncn-s002: ncn-s002 ncn-s003: ncn-s003 "

# --- usage errors
"$PGR" fanout -w 'a[1-' -- true >/dev/null 2>"$D/err"; rc=$?
same "bad hostlist: exit 2" "$rc" 2
check "bad hostlist: the position is named" grep -q "unclosed '\[' at position 2" "$D/err"
PGR_SITE=/dev/null "$PGR" fanout -- true >/dev/null 2>&1; rc=$?
same "no hosts and no site nodes: exit 2" "$rc" 2

# --- Ctrl-C: every ssh child stopped, exit 130
"$PGR" fanout -o "-F $CFG" -w 'ncn-m00[1-3],ncn-w00[1-3]' -- 'echo started; sleep 60' >"$D/int.out" 2>"$D/int.err" &
P=$!; PIDS+=("$P")
for _ in $(seq 1 100); do [ "$(wc -l < "$D/int.out")" -ge 6 ] && break; sleep 0.1; done
same "Ctrl-C: all six started first" "$(wc -l < "$D/int.out")" 6
sshpids=$(pgrep -P "$P" | tr '\n' ' ')
kill -INT "$P"
wait "$P"; rc=$?
same "Ctrl-C: exit 130" "$rc" 130
alive=0
for p in $sshpids; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
same "Ctrl-C: none of its ${sshpids:+$(wc -w <<<"$sshpids")} ssh children is left" "$alive" 0
check "Ctrl-C: says so" grep -q 'interrupted' "$D/int.err"

echo "1..$n"
[ "$failed" -eq 0 ]
