#!/usr/bin/env bash
# Terminals that cannot move the cursor or colour — TERM unset (ssh without -t, a console), "dumb"
# (an Emacs shell) or a name this machine has no terminfo entry for — get plain output: the REPL
# edits a line and prints results without escape sequences, and progress lines are plain lines.
# Driven through a real pseudo-terminal (tmux), its raw output recorded (pipe-pane).
set -u
cd "$(dirname "$0")/../.."
root=$PWD
PGR=${PGR:-$root/pgr}
T=$(mktemp -d /tmp/pgr-term.XXXXXX)
SOCK=
trap '[ -n "$SOCK" ] && tmux -L "$SOCK" kill-server 2>/dev/null; rm -rf "$T"' EXIT
n=0
ok() { n=$((n + 1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fi; }
tm() { tmux -L "$SOCK" "$@" 2>/dev/null; }
screen() { tm capture-pane -p -t t -S -50; }
wait_for() {  # wait_for REGEX: until the screen shows it (10 s at most)
  for _ in $(seq 1 200); do screen | grep -qE -- "$1" && return 0; sleep 0.05; done
  screen | sed 's/^/# | /'
  return 1
}
# run NAME ENV CMD: CMD in a fresh pane, its raw output recorded in $T/NAME.raw from the start
run() {
  [ -n "$SOCK" ] && tm kill-server
  SOCK=pgr-term-$$-$1   # a server of its own for each run
  : > "$T/$1.raw"
  tm new-session -d -s t -x 100 -y 30 "read go; env $2 HOME=$T XDG_STATE_HOME= NO_COLOR= $3; sleep 30"
  tm pipe-pane -t t -o "cat >> $T/$1.raw"
  tm send-keys -t t Enter
}
has_esc() { LC_ALL=C grep -q $'\033' "$T/$1.raw"; }

for term in unset dumb no-such-terminal-xyz; do
  if [ $term = unset ]; then e="-u TERM"; else e="TERM=$term"; fi
  run "repl-$term" "$e" "$PGR repl"
  ok "TERM=$term: the REPL prompts" 'wait_for "^>"'
  tm send-keys -t t -l 'x = 1 + 41'; tm send-keys -t t Enter
  tm send-keys -t t -l 'x'; tm send-keys -t t Enter
  ok "TERM=$term: an expression's value is printed" 'wait_for "^42$"'
  tm send-keys -t t C-d
  sleep 0.3
  ok "TERM=$term: no escape sequence reached the terminal" '! has_esc "repl-$term" || { od -c "$T/repl-$term.raw" | head -5 | sed "s/^/# /"; false; }'
done

# Progress and colour: a status line, a coloured line, a permanent line
cat > "$T/ui.lua" <<'LUA'
local ui = require "pgr.ui"
ui.status("waiting for the pod")
ui.line(ui.color("green", "done"))
print("end of output")
LUA
run ui-xterm "TERM=xterm" "$PGR $T/ui.lua"
ok "TERM=xterm: the program ran" 'wait_for "^end of output"'
ok "TERM=xterm: colour and redrawing are used (the check sees escapes)" 'has_esc ui-xterm'
for term in unset dumb; do
  if [ $term = unset ]; then e="-u TERM"; else e="TERM=$term"; fi
  run "ui-$term" "$e" "$PGR $T/ui.lua"
  ok "TERM=$term: the program ran" 'wait_for "^end of output"'
  ok "TERM=$term: plain lines, no colour, no redrawing" '! has_esc "ui-$term" || { od -c "$T/ui-$term.raw" | head -5 | sed "s/^/# /"; false; }'
done
echo "1..$n"
