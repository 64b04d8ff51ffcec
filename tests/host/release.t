#!/usr/bin/env bash
# tests/host/release.t — `make release` and `make rpm`: the tarball's files, a static and stripped
# binary, a man page made of the commands' own help, a reproducible archive; the RPM's file list
# (pinned), no dependency, installed with `rpm --root` into an empty root where the installed pgr
# runs and finds its procedures in /usr/share/pgr/services; a site's own site.lua is never touched.
# Skipped (one TAP skip line) when build/static/pgr does not exist: `make static` builds it.
set -u
cd "$(dirname "$0")/../.."
root=$PWD
if [ ! -x build/static/pgr ]; then
  echo "1..0 # SKIP build/static/pgr does not exist (make static builds it)"
  exit 0
fi
T=$(mktemp -d /tmp/pgr-release.XXXXXX)
trap 'rm -rf "$T"' EXIT
n=0 failed=0
ok() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed + 1)); fi; }
is() { if [ "$2" = "$3" ]; then ok 0 "$1"; else ok 1 "$1"; echo "#   got: '$2'" | head -30; echo "#   expected: '$3'"; fi; }
version=$(sed -n 's/^VERSION := //p' Makefile)
name=pgr-$version-linux-x86_64
tarball=build/dist/$name.tar.gz
rpmfile=build/dist/pgr-$version-1.x86_64.rpm

make -s rpm >"$T/make.log" 2>&1
rc=$?
is "make rpm (and so make release) succeeds" "$rc" 0
[ "$rc" = 0 ] || { sed 's/^/#   /' "$T/make.log" | tail -30; echo "1..$n"; exit 1; }

# --- the tarball
services=$(cd services && ls *.lua | sort | sed "s|^|$name/services/|")
want=$(printf '%s\n' "$name/" "$name/README.md" "$name/etc/" "$name/etc/site.example.lua" "$name/pgr" \
  "$name/pgr.1" "$name/services/" $services | sort)
is "the tarball holds the binary, services/, etc/site.example.lua, README.md and pgr.1" \
  "$(tar tzf "$tarball" | sort)" "$want"
tar xzf "$tarball" -C "$T"
LC_ALL=C readelf -d "$T/$name/pgr" 2>&1 | grep -q 'There is no dynamic section'
ok $? "its pgr is the static binary"
LC_ALL=C readelf -S "$T/$name/pgr" | grep -q '\.debug_info'
ok $((1 - $?)) "its pgr is stripped"
is "its pgr runs" "$("$T/$name/pgr" version | head -1 | sed 's/ (.*//')" "pgr $version"
is "the archive's entries belong to root" "$(tar tvzf "$tarball" | awk '{print $2}' | sort -u)" "0/0"
sum1=$(sha256sum < "$tarball")
host/tools/static/release.sh build/static/pgr "$version" "$T/again" >/dev/null 2>&1
is "the tarball is reproducible (same bytes when made again)" "$(sha256sum < "$T/again/$name.tar.gz")" "$sum1"
(cd build/dist && sha256sum -c --quiet "$name.tar.gz.sha256" >/dev/null 2>&1)
ok $? "its .sha256 checks"

# --- the man page: the commands' own help, valid roff
man=$T/$name/pgr.1
warn=$(groff -man -Tutf8 -ww -z "$man" 2>&1)
is "pgr.1 renders without a groff warning" "$warn" ""
page=$(groff -man -Tascii -P-c -P-b -P-u "$man" 2>/dev/null)
missing=""
for cmd in $("$T/$name/pgr" -e 'for _, c in ipairs(require("pgr.cli").commands()) do print(c) end'); do
  first=$("$T/$name/pgr" help "$cmd" | head -1)
  echo "$page" | grep -qF -- "$first" || missing="$missing $cmd"
done
is "pgr.1 holds every command's usage line, as its --help prints it" "$missing" ""
echo "$page" | grep -q "^EXIT STATUS" && echo "$page" | grep -q "130 interrupted"
ok $? "pgr.1 has the exit codes"

# --- the RPM
is "the RPM: name, version, architecture" \
  "$(rpm -qp --qf '%{NAME} %{VERSION} %{RELEASE} %{ARCH}\n' "$rpmfile" 2>/dev/null)" "pgr $version 1 x86_64"
want=$(printf '%s\n' /etc/pgr /etc/pgr/site.example.lua /usr/bin/pgr /usr/share/doc/pgr /usr/share/doc/pgr/README.md \
  /usr/share/man/man1/pgr.1.gz /usr/share/pgr /usr/share/pgr/services \
  $(cd services && ls *.lua | sed 's|^|/usr/share/pgr/services/|') | sort)
is "the RPM's file list" "$(rpm -qlp "$rpmfile" 2>/dev/null | sort)" "$want"
is "the RPM needs nothing of the system (only rpmlib features)" \
  "$(rpm -qp --requires "$rpmfile" 2>/dev/null | grep -v '^rpmlib(' | sort)" ""
is "site.example.lua is a config file, kept if edited" \
  "$(rpm -qp --configfiles "$rpmfile" 2>/dev/null)" "/etc/pgr/site.example.lua"

CHROOT=$(command -v chroot)   # env -i leaves no PATH to find it by
R=$T/root
mkdir -p "$R"
rpmq() { rpm --root "$R" --dbpath /var/lib/rpm "$@"; }
rpmq --initdb 2>"$T/rpm.log"
rpmq -i "$rpmfile" >>"$T/rpm.log" 2>&1
rc=$?
is "rpm --root installs it into an empty root" "$rc" 0
[ "$rc" = 0 ] || sed 's/^/#   /' "$T/rpm.log"
is "rpm -V: the installed files are as packaged" "$(rpmq -V pgr 2>&1)" ""
out=$(env -i HOME=/root "$CHROOT" "$R" /usr/bin/pgr version 2>&1 | head -1)
echo "$out" | grep -q "^pgr $version (static, musl"
ok $? "the installed pgr runs in that root (which holds nothing else)"
is "the installed pgr finds spire in /usr/share/pgr/services" \
  "$(env -i HOME=/root "$CHROOT" "$R" /usr/bin/pgr -e 'print((require("pgr.runbook").locate("spire")))')" \
  "/usr/share/pgr/services/spire.lua"
out=$(env -i HOME=/root "$CHROOT" "$R" /usr/bin/pgr plan spire 2>&1)
echo "$out" | head -1 | grep -q '^spire — Restore Postgres for Spire'
ok $? "pgr plan spire runs from the installed procedure"
[ ! -e "$R/etc/pgr/site.lua" ]; ok $? "no site.lua is installed"
# a site's own file survives a reinstall and the removal of the package
printf 'return { nodes = "ncn-m001" }\n' > "$R/etc/pgr/site.lua"
rpmq -i --replacepkgs "$rpmfile" >"$T/rpm2.log" 2>&1
is "a site's site.lua survives a reinstall" "$(cat "$R/etc/pgr/site.lua")" 'return { nodes = "ncn-m001" }'
rpmq -e pgr >"$T/rpm3.log" 2>&1
is "rpm -e removes the package" "$?" 0
left=$(cd "$R" && find . -path ./var -prune -o -type f -print | sort | tr '\n' ' ')
is "after rpm -e only the site's own file is left" "$left" "./etc/pgr/site.lua "

echo "1..$n"
[ "$failed" -eq 0 ]
