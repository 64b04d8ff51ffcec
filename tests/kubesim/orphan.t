#!/usr/bin/env bash
# orphan.t — a sandbox whose directory is removed from under it (a hand-typed rm -rf) stops by itself,
# its PostgreSQL pods included, instead of running on where `kubesim down` can no longer reach it. TAP.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
KS=$HERE/kubesim
T=$(mktemp -d /tmp/kubesim-orphan.XXXXXX)
SIM=$T/sim
trap '"$KS" down "$SIM" >/dev/null 2>&1; [ -n "${pids:-}" ] && kill -9 $pids 2>/dev/null; rm -rf "$T"' EXIT
echo "1..4"
if ! "$KS" up "$SIM" --fixture csm >"$T/up.log" 2>&1; then
    echo "not ok 1 - kubesim up"; sed 's/^/# /' "$T/up.log"; exit 1
fi
echo "ok 1 - kubesim up --fixture csm"
daemon=$(cat "$SIM/kubesim.pid")
# the postmasters the simulator started: children of the daemon running postgres
pgs=$(pgrep -P "$daemon" -x postgres | tr '\n' ' ')
pids="$daemon $pgs"
n=$(echo $pgs | wc -w)
if [ "$n" -ge 5 ]; then echo "ok 2 - $n PostgreSQL pods running"; else echo "not ok 2 - $n PostgreSQL pods running (want >= 5)"; fi
rm -rf "$SIM"
gone=1
for _ in $(seq 100); do
    gone=1
    for p in $pids; do kill -0 "$p" 2>/dev/null && gone=0; done
    [ $gone = 1 ] && break
    sleep 0.1
done
alive() { local a=""; for p in "$@"; do kill -0 "$p" 2>/dev/null && a="$a $p"; done; echo "${a:-none}"; }
if ! kill -0 "$daemon" 2>/dev/null; then echo "ok 3 - the daemon exited within 10 s"; else echo "not ok 3 - the daemon exited within 10 s"; fi
still=$(alive $pgs)
if [ "$still" = none ]; then echo "ok 4 - every PostgreSQL server stopped with it"; else echo "not ok 4 - PostgreSQL servers left running: $still"; fi
