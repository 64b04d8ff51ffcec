#!/usr/bin/env bash
# tests/fuzz/fuzz.t — builds the script splitter's libFuzzer target with clang (outside the Makefile)
# and runs it for a bounded time from a seed corpus of real scripts; TAP out.
set -u
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-20}
T=$(mktemp -d /tmp/pgr-fuzz.XXXXXX)
trap 'rm -rf "$T"' EXIT
echo "1..3"
if ! command -v clang >/dev/null; then
  echo "ok 1 - # SKIP clang not installed"; echo "ok 2 - # SKIP"; echo "ok 3 - # SKIP"; exit 0
fi
if clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Ihost \
    tests/fuzz/fuzz_script.c host/script.c -o "$T/fuzz_script" 2>"$T/build.log"; then
  echo "ok 1 - fuzz target builds"
else
  echo "not ok 1 - fuzz target builds"; sed 's/^/#   /' "$T/build.log" | head -20; exit 1
fi
mkdir -p "$T/corpus"
i=0
for f in tests/pg/*.sql tests/unit/test_script.c; do
  [ -f "$f" ] || continue
  # the first byte picks the chunk size; keep seeds small so mutations stay fast
  { printf '\005'; head -c 4000 "$f"; } > "$T/corpus/seed$i"; i=$((i + 1))
done
printf '\003COPY t FROM stdin;\n1\t\\.\n\\.\r\n\\connect "x"\n$a$;$a$;E'"'"'\\'"'"';'"'"'x'"'"';' > "$T/corpus/seed_copy"
if "$T/fuzz_script" -max_total_time="$SECS" -max_len=8192 -timeout=10 -rss_limit_mb=1024 \
    -artifact_prefix="$T/" "$T/corpus" >"$T/fuzz.log" 2>&1; then
  echo "ok 2 - no crash, leak or chunking disagreement in ${SECS}s"
else
  echo "not ok 2 - the fuzzer found a failure"
  grep -E 'ERROR|SUMMARY|==|deadly' "$T/fuzz.log" | head -20 | sed 's/^/#   /'
  for a in "$T"/crash-* "$T"/leak-* "$T"/timeout-*; do
    [ -f "$a" ] && { echo "#   input:"; od -c "$a" | head -10 | sed 's/^/#   /'; }
  done
fi
runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+|#[0-9]+\s+DONE' "$T/fuzz.log" | tail -1)
execs=$(grep -oE '^#[0-9]+' "$T/fuzz.log" | tail -1 | tr -d '#')
if [ "${execs:-0}" -gt 1000 ]; then echo "ok 3 - the fuzzer ran $execs inputs"; else echo "not ok 3 - the fuzzer ran too few inputs (${execs:-0}) $runs"; fi
