# bench/lib/cpu.sh — sourced by the benches: how much CPU the whole machine spent while a command ran.
# On a small machine a tool that runs work side by side is bounded by the CPU the work needs, not by
# its own speed: the figures here show that bound next to the wall time.
#   cpu_busy             prints the machine's busy CPU time so far, in seconds (every CPU, from /proc/stat)
#   cpu_floor BUSY WALL  prints "CPU-s busy, floor = BUSY / cores" as the benches show it
NCPU=$(getconf _NPROCESSORS_ONLN)
CLK_TCK=$(getconf CLK_TCK)

cpu_busy() {
  # user nice system idle iowait irq softirq steal: busy is all but idle, iowait and steal
  awk -v hz="$CLK_TCK" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8) / hz; exit }' /proc/stat
}

# cpu_floor CPU_SECONDS: the shortest wall time that much CPU work allows on this machine
cpu_floor() { awk -v c="$1" -v n="$NCPU" 'BEGIN { printf "%.2f", c / n }'; }

# proc_cpu PID...: the CPU seconds those processes have spent so far, with their reaped children's
# (a PostgreSQL postmaster's includes its finished backends). Unlike cpu_busy it leaves out whatever
# else the machine runs, so it holds on a shared machine.
proc_cpu() {
  for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; echo; done |
    awk -v hz="$CLK_TCK" 'NF { sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 } END { printf "%.2f\n", t / hz }'
}

# server_cpu DATADIR: CPU seconds of a PostgreSQL server: its postmaster (and finished backends)
# and the processes still running under it
server_cpu() {
  local pm
  pm=$(head -1 "$1/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  # shellcheck disable=SC2046
  proc_cpu "$pm" $(pgrep -P "$pm")
}
