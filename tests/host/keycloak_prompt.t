#!/usr/bin/env bash
# Keycloak's check without a credentials file asks on the terminal: the user name echoed, the
# password not (sys.read_password), then a real password grant against a token endpoint
# (tests/e2e/tokenserver.py). Driven as an engineer drives it: a real pseudo-terminal (tmux), keys typed.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
PGR=${PGR:-$root/pgr}
T=$(mktemp -d /tmp/pgr-kcprompt.XXXXXX)
SOCK=pgr-kc-$$
cleanup() {
  for s in "$SOCK"-1 "$SOCK"-2; do tmux -L "$s" kill-server 2>/dev/null; done
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
n=0
ok() { n=$((n + 1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fi; }
screen() { tmux -L "$sock" capture-pane -p -t kc -S -50; }
# wait_for TEXT: until the terminal shows TEXT (30 s at most)
wait_for() {
  for _ in $(seq 1 600); do screen | grep -qF "$1" && return 0; sleep 0.05; done
  screen | sed 's/^/# | /'
  return 1
}

PASSWORD='kc-Pr0mpt pass;word'
USER_NAME=admin USER_PASSWORD=$PASSWORD COUNT_FILE=$T/grants \
  python3 tests/e2e/tokenserver.py 127.25.9.1 >"$T/srv.out" 2>&1 &
srv=$!
for _ in $(seq 1 600); do grep -q '^port=' "$T/srv.out" 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^port=//p' "$T/srv.out")
ok "the token endpoint is up" '[ -n "$port" ]'

# The step's own function with a run context of the shape pgr.runbook gives it: the site's
# keycloak settings, and ctx:secret, which must see the password (it is then masked everywhere).
cat >"$T/check.lua" <<EOF
local restore = require "pgr.restore"
local seen = {}
local ctx = { dry_run = false, site = { keycloak = { token_url = "http://127.25.9.1:$port/token", client_id = "shasta" } } }
function ctx:secret(s) seen[#seen + 1] = s return s end
local res, err = restore.keycloak_token(ctx)
local f = assert(io.open("$T/result", "w"))
f:write(tostring(res), "\n", tostring(err), "\n", #seen, "\n")
f:close()
EOF

# run_prompt USER PASSWORD: types them when asked; leaves the screen in $T/screen. Each run has a
# tmux server of its own (a new session on a server being killed can meet it still exiting).
runs=0
run_prompt() {
  rm -f "$T/result" "$T/screen"
  runs=$((runs + 1)) sock=$SOCK-$runs
  tmux -L "$sock" new-session -d -s kc -x 100 -y 20 "$PGR $T/check.lua; sleep 30"
  # (capture-pane drops trailing blanks: the prompts are matched without theirs)
  wait_for "Keycloak user:" || return 1
  tmux -L "$sock" send-keys -t kc -l "$1"
  tmux -L "$sock" send-keys -t kc Enter
  wait_for "Keycloak password:" || return 1
  tmux -L "$sock" send-keys -t kc -l "$2"
  tmux -L "$sock" send-keys -t kc Enter
  for _ in $(seq 1 600); do [ -s "$T/result" ] && break; sleep 0.05; done
  screen >"$T/screen"
}

run_prompt admin "$PASSWORD"
ok "with the right password a token is obtained" '[ "$(head -1 "$T/result" 2>/dev/null)" = "a token was obtained for admin" ] || { sed "s/^/# /" "$T/result" "$T/screen"; false; }'
ok "the endpoint granted it once" '[ "$(cat "$T/grants" 2>/dev/null)" = ok ]'
ok "the user name was echoed" 'grep -q "Keycloak user: admin" "$T/screen"'
ok "the password was not echoed" '[ -s "$T/screen" ] && ! grep -qF "$PASSWORD" "$T/screen" && ! grep -qF "Pr0mpt" "$T/screen"'
ok "the password and the token were handed to ctx:secret (masked from then on)" '[ "$(sed -n 3p "$T/result")" = 2 ]'

run_prompt admin "not-the-password"
ok "a wrong password fails the check, naming the endpoint's answer" \
  '[ "$(head -1 "$T/result" 2>/dev/null)" = nil ] && grep -q "401 without an access_token" "$T/result" || { sed "s/^/# /" "$T/result"; false; }'
ok "the endpoint denied it" '[ "$(tail -1 "$T/grants")" = denied ]'
ok "the wrong password was not echoed either" 'grep -q "Keycloak password:" "$T/screen" && ! grep -qF "not-the-password" "$T/screen"'

# without a terminal and without a credentials file it refuses instead of hanging
rm -f "$T/result"
out=$("$PGR" "$T/check.lua" </dev/null 2>&1; cat "$T/result")
ok "without a terminal it says what to configure" 'echo "$out" | grep -q "no keycloak.credentials_file in the site file and no terminal to ask on"'

echo "1..$n"
