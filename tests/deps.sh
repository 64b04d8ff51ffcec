#!/usr/bin/env bash
# tests/deps.sh — installs the Debian packages (tests/packages.txt) and npm packages the build and
# the tests need, when missing. As root: non-interactive apt-get. Otherwise prints the exact line.
set -eu
cd "$(dirname "$0")/.."
want=$(sed 's/#.*//' tests/packages.txt | tr -s ' \n' '\n' | grep -v '^$')
missing=()
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case $st in *"install ok installed"*) ;; *) missing+=("$p") ;; esac
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || apt-get update
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/pgr-apt.log 2>&1 ||
      { tail -n 30 /tmp/pgr-apt.log; exit 1; }
  else
    echo "deps: missing Debian packages; run as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
# kubectl: the machine image ships one (pkgs.k8s.io); Debian's kubernetes-client is the fallback
if ! command -v kubectl >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get install -y -qq kubernetes-client >/tmp/pgr-apt.log 2>&1 || { tail -n 30 /tmp/pgr-apt.log; exit 1; }
  else
    echo "deps: kubectl is missing; run as root: apt-get install -y kubernetes-client" >&2; exit 1
  fi
fi
# npm packages of test servers (a package.json beside them), installed from the lock file
for pj in tests/*/package.json; do
  [ -f "$pj" ] || continue
  d=$(dirname "$pj")
  if [ ! -d "$d/node_modules" ]; then
    command -v npm >/dev/null || { echo "deps: npm is needed for $d" >&2; exit 1; }
    echo "deps: npm install in $d"
    (cd "$d" && npm ci --no-audit --no-fund --silent 2>/dev/null || npm install --no-audit --no-fund --silent)
  fi
done
