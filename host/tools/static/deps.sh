#!/usr/bin/env bash
# host/tools/static/deps.sh — what `make static` needs before it builds: the packages in
# host/tools/static/packages.txt and apt's source index (deb-src) for bookworm, bookworm-updates and
# bookworm-security, taken from the same URIs as the machine's binary sources. As root it adds them;
# otherwise it prints what to do.
set -eu
cd "$(dirname "$0")/../../.."
srcfile=/etc/apt/sources.list.d/pgr-deb-src.sources
want=$(sed 's/#.*//' host/tools/static/packages.txt | tr -s ' \n' '\n' | grep -v '^$')
missing=()
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case $st in *"install ok installed"*) ;; *) missing+=("$p") ;; esac
done

# The deb-src stanzas: each "Types: deb" stanza of the machine's deb822 sources whose suite is
# bookworm, bookworm-updates or bookworm-security, with "Types: deb-src" (URIs, components, keys kept).
deb_src_stanzas() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && [ "$f" != "$srcfile" ] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         /(^|\n)Types:[^\n]*deb/ && /(^|\n)Suites:[^\n]*bookworm/ {
           out = ""
           n = split($0, l, "\n")
           for (i = 1; i <= n; i++) {
             if (l[i] ~ /^#/) continue
             if (l[i] ~ /^Types:/) l[i] = "Types: deb-src"
             out = out l[i] "\n"
           }
           printf "%s\n", out
         }' "$f"
  done
}
have_src() { grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; }

need_src=0
have_src || need_src=1
if [ $need_src = 0 ] && [ ${#missing[@]} = 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "static deps: as root, run host/tools/static/deps.sh (it adds $srcfile for apt-get source" >&2
  [ ${#missing[@]} -gt 0 ] && echo "  and runs: apt-get install -y ${missing[*]})" >&2 || echo "  )" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ $need_src = 1 ]; then
  stanzas=$(deb_src_stanzas)
  if [ -z "$stanzas" ]; then
    echo "static deps: no deb822 bookworm source in /etc/apt/sources.list.d/ to derive deb-src from;" >&2
    echo "  add deb-src lines for bookworm, bookworm-updates, bookworm-security by hand" >&2
    exit 1
  fi
  { echo "# added by pgr's host/tools/static/deps.sh: source packages for 'make static'"
    printf '%s\n' "$stanzas"; } > "$srcfile.tmp" && mv "$srcfile.tmp" "$srcfile"
  echo "static deps: added $srcfile"
fi
apt-get update -qq || apt-get update
if [ ${#missing[@]} -gt 0 ]; then
  echo "static deps: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/pgr-apt-static.log 2>&1 ||
    { tail -n 30 /tmp/pgr-apt-static.log; exit 1; }
fi
