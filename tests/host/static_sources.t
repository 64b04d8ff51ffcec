#!/usr/bin/env bash
# tests/host/static_sources.t — the static build unpacks a Debian source package only when every
# file matches the .dsc's checksums (host/tools/static/build.sh verify, the step `make static` runs):
# the package as apt fetched it unpacks, with Debian's patches applied; one changed byte in its
# upstream tarball stops it, and nothing is left unpacked.
# Skipped (one TAP skip line) when make static has fetched no source yet (build/static/src).
set -u
cd "$(dirname "$0")/../.."
root=$PWD
dsc=$(ls build/static/src/cjson_*.dsc 2>/dev/null | sort -V | tail -1)
if [ -z "$dsc" ]; then
  echo "1..0 # SKIP no source package in build/static/src (make static fetches them)"
  exit 0
fi
T=$(mktemp -d /tmp/pgr-sources.XXXXXX)
trap 'rm -rf "$T"' EXIT
n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi; }
# the files the .dsc lists, copied
files=$(awk '/^Checksums-Sha256:/ { on = 1; next } /^[^ ]/ { on = 0 } on { print $3 }' "$dsc")
cp "$dsc" "$T/"
for f in $files; do cp "build/static/src/$f" "$T/"; done
d=$T/$(basename "$dsc")
host/tools/static/build.sh verify "$d" "$T/good" >"$T/good.out" 2>&1
ok $? "the package as fetched unpacks" || sed 's/^/#   /' "$T/good.out"
[ -f "$T/good/cJSON.c" ] && [ -d "$T/good/debian/patches" ]
ok $? "its tree is there, with Debian's patches"
orig=$T/$(echo "$files" | grep '\.orig\.tar' | head -1)
python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0x01; open(p, "wb").write(b)' "$orig"
host/tools/static/build.sh verify "$d" "$T/bad" >"$T/bad.out" 2>&1
rc=$?
[ $rc -ne 0 ]; ok $? "one changed byte in the upstream tarball: verification fails (exit $rc)"
grep -q "has checksum .* instead of expected" "$T/bad.out"; ok $? "dpkg-source says which file and which checksum"
grep -q "nothing built from it" "$T/bad.out"; ok $? "the build says it stops there"
[ ! -e "$T/bad" ] && [ ! -e "$T/bad.tmp" ]; ok $? "nothing is left unpacked"
echo "1..$n"
[ "$failed" -eq 0 ]
