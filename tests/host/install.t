#!/usr/bin/env bash
# make install puts a self-contained pgr (its Lua library embedded) and the service procedures
# under DESTDIR/PREFIX; the installed binary runs from any directory, without the source tree.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
n=0
ok() { n=$((n + 1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fi; }
sanitize=""; [ "${SANITIZE:-}" = 1 ] && sanitize="SANITIZE=1"
[ "${STATIC:-}" = 1 ] && sanitize="STATIC=1"   # the static run installs the static binary
make -s install DESTDIR="$dest" PREFIX=/usr $sanitize >"$dest/make.log" 2>&1
ok "make install succeeds" '[ $? -eq 0 ] || { sed "s/^/# /" "$dest/make.log"; false; }'
ok "the binary is installed executable" '[ -x "$dest/usr/bin/pgr" ]'
ok "service procedures are installed" '[ -z "$(ls services/*.lua 2>/dev/null)" ] || [ -f "$dest/usr/share/pgr/services/$(basename "$(ls services/*.lua | head -1)")" ]'
out=$(cd / && env -i PATH=/usr/bin:/bin HOME="$dest" "$dest/usr/bin/pgr" -e 'print(require("pgr.cli") ~= nil, require("pgr.pretty").format({1}))' 2>&1)
ok "the installed binary loads its embedded library from /" '[ "$out" = "true	{ 1 }" ] || { echo "# $out"; false; }'
out=$(cd / && "$dest/usr/bin/pgr" version 2>&1)
ok "pgr version runs from the installed copy" 'echo "$out" | grep -q "^pgr [0-9]"'
# a bare service name is the installed procedure, never one in the current directory
mkdir -p "$dest/cwd/services" && printf 'error("the current directory ran")\n' > "$dest/cwd/services/spire.lua"
cp "$dest/cwd/services/spire.lua" "$dest/cwd/spire"
out=$(cd "$dest/cwd" && "$dest/usr/bin/pgr" plan spire 2>&1)
ok "pgr plan spire runs the installed procedure, not ./services/spire.lua" \
  'echo "$out" | head -1 | grep -q "^spire — Restore Postgres for Spire" || { echo "# $out"; false; }'
make -s uninstall DESTDIR="$dest" PREFIX=/usr >/dev/null 2>&1
ok "make uninstall removes it" '[ ! -e "$dest/usr/bin/pgr" ] && [ ! -e "$dest/usr/share/pgr" ]'
echo "1..$n"
