#!/usr/bin/env bash
# host/tools/static/rpm.sh TARBALL VERSION OUTDIR — builds OUTDIR/pgr-VERSION-1.x86_64.rpm from the
# release tarball with rpmbuild (Debian's rpm package) and host/tools/static/pgr.spec.
set -euo pipefail
cd "$(dirname "$0")/../../.."
[ $# = 3 ] || { echo "usage: rpm.sh TARBALL VERSION OUTDIR" >&2; exit 2; }
tarball=$1 version=$2 out=$3
command -v rpmbuild >/dev/null || { echo "rpm: rpmbuild is missing (host/tools/static/deps.sh installs rpm)" >&2; exit 1; }
top=$(realpath -m "$out/rpmbuild")
rm -rf "$top"
mkdir -p "$top/SOURCES" "$top/SPECS" "$top/BUILD" "$top/RPMS" "$top/SRPMS"
cp "$tarball" "$top/SOURCES/"
sed "s/@VERSION@/$version/g" host/tools/static/pgr.spec > "$top/SPECS/pgr.spec"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
rpmbuild --quiet --define "_topdir $top" -bb "$top/SPECS/pgr.spec" >"$top/rpmbuild.log" 2>&1 ||
  { cat "$top/rpmbuild.log" >&2; exit 1; }
rpm=$(find "$top/RPMS" -name "pgr-$version-*.rpm" | head -1)
[ -n "$rpm" ] || { echo "rpm: rpmbuild made no package" >&2; cat "$top/rpmbuild.log" >&2; exit 1; }
mv "$rpm" "$out/"
rm -rf "$top"
echo "rpm: $out/$(basename "$rpm")"
