#!/usr/bin/env bash
# The long guided runs (docs/fuzzing.md): each target in turn (one fuzzer at a time: the machine is
# shared), SECONDS_PER_TARGET of libFuzzer from the committed corpus into OUT/<target>/corpus, crash /
# timeout / oom artifacts in OUT/<target>/, a log per target.  A run that stops on an escape is
# restarted (at most 3 times) for the rest of its time, so one escape does not end the search.
#   scripts/fuzz-guided-long.sh OUT [SECONDS_PER_TARGET] [TARGET ...]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: $0 OUT [SECONDS] [TARGET ...]}; shift
secs=${1:-240}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(luo memmap spec kdump elf fdt)
for t in "${targets[@]}"; do
  mkdir -p "$out/$t/corpus"
  start=$(date +%s)
  for try in 1 2 3 4; do
    left=$(( secs - ($(date +%s) - start) ))
    [ "$left" -gt 5 ] || break
    echo "== $t try $try: $left s" >>"$out/$t.log"
    PYTHONPATH=$PWD nice -n 10 python -m fuzz.guided "$t" "$out/$t/corpus" "fuzz/corpus/$t" \
      -timeout=5 -rss_limit_mb=1024 -max_total_time="$left" -print_final_stats=1 \
      -artifact_prefix="$out/$t/" >>"$out/$t.log" 2>&1
    rc=$?
    echo "== $t try $try: exit $rc" >>"$out/$t.log"
    [ "$rc" -eq 0 ] && break
  done
done
