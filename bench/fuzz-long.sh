#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz-long.sh TARGET RUNS - runs a libFuzzer target for RUNS executions
# (not in CI: the long runs that CI's short ones cannot be) and prints
# the total count of executions and whether the run was clean.
#   TARGET: nbd (blockd/fuzz-nbd.c), handshake (blockd/fuzz-handshake.c)
#           or backup (backup/fuzz-backup.c)
# Environment:
#   VBK_FUZZ_DIR      build and corpus directory, kept from run to run so
#                     that a run goes on from the corpus of the last one
#                     (default /tmp/vbk-fuzz-long)
#   VBK_FUZZ_LOGS     where the logs go (default $VBK_FUZZ_DIR/logs)
#   VBK_FUZZ_WORKERS  parallel fuzzing processes (default 1), RUNS shared
#                     among them
#   VBK_FUZZ_NICE     niceness (default 10)
#   VBK_FUZZ_REBUILD  1: rebuild even if the binaries are there
#   VBK_FUZZ_SECONDS  stop after this long even if RUNS are not done
#   VBK_FUZZ_MAX_LEN  the longest input (default 8192 for nbd, 4096 for
#                     handshake, 65536 for backup); shorter inputs run
#                     faster (a 1024-byte input still holds a handshake
#                     and a few dozen requests)
# An interrupt (^C, kill -INT of the fuzzer) ends the run with libFuzzer's
# final statistics: it counts as interrupted, clean if nothing was found.
# A crash, leak, sanitizer report or protocol violation leaves its input
# in the log directory (crash-*, leak-*, timeout-*) and makes the run not
# clean (exit status 1).  Reproduce with: $VBK_FUZZ_DIR/fuzz-TARGET FILE.

set -euo pipefail
VBK_SRC=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: fuzz-long.sh nbd|handshake|backup RUNS}
runs=${2:?usage: fuzz-long.sh nbd|handshake|backup RUNS}
dir=${VBK_FUZZ_DIR:-/tmp/vbk-fuzz-long}
logs=${VBK_FUZZ_LOGS:-$dir/logs}
workers=${VBK_FUZZ_WORKERS:-1}
niceness=${VBK_FUZZ_NICE:-10}

case "$target" in
  nbd) bin=fuzz-nbd; seeds=corpus; max_len=8192; kind=blockd ;;
  handshake) bin=fuzz-handshake; seeds=hs-corpus; max_len=4096; kind=blockd ;;
  backup) bin=fuzz-backup; seeds=backup-corpus; max_len=65536; kind=backup ;;
  *) echo "fuzz-long: unknown target $target" >&2; exit 2 ;;
esac
max_len=${VBK_FUZZ_MAX_LEN:-$max_len}
mkdir -p "$dir" "$logs"
if [ ! -x "$dir/$bin" ] || [ "${VBK_FUZZ_REBUILD:-0}" = 1 ]; then
  echo "fuzz-long: building $bin in $dir"
  VBK_SRC=$VBK_SRC nice -n "$niceness" "$VBK_SRC/tests/fuzz-build.sh" "$dir" "$kind"
fi

# The corpus grows from run to run; the seeds join it each time.
corpus=$dir/$target-work
mkdir -p "$corpus"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
log=$logs/$bin-$stamp
echo "fuzz-long: $bin, $runs runs, $workers worker(s), logs $log*"
start=$(date +%s)
rc=0
cd "$logs"
opts=(-max_len="$max_len" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$logs/$bin-")
[ -z "${VBK_FUZZ_SECONDS:-}" ] || opts+=(-max_total_time="$VBK_FUZZ_SECONDS")
if [ "$workers" -le 1 ]; then
  nice -n "$niceness" "$dir/$bin" -runs="$runs" "${opts[@]}" \
    "$corpus" "$dir/$seeds" >"$log.log" 2>&1 || rc=$?
  logfiles=("$log.log")
else
  # One log per job (fuzz-N.log in the current directory).
  mkdir -p "$log.jobs"
  cd "$log.jobs"
  nice -n "$niceness" "$dir/$bin" -jobs="$workers" -workers="$workers" \
    -runs=$(( (runs + workers - 1) / workers )) "${opts[@]}" \
    "$corpus" "$dir/$seeds" >"$log.log" 2>&1 || rc=$?
  logfiles=("$log.jobs"/fuzz-*.log)
fi
elapsed=$(( $(date +%s) - start ))
# The store of a target that crashed or was interrupted.
"$VBK_SRC/tests/fuzz-build.sh" --clean

total=0
for f in "${logfiles[@]}"; do
  n=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$f" | grep -Eo '[0-9]+$' | tail -1 || true)
  total=$(( total + ${n:-0} ))
done
problems=$(grep -hE '^==[0-9]+==ERROR|^SUMMARY|protocol violation|Test unit written' "${logfiles[@]}" | head -5 || true)
echo "fuzz-long: $bin: $total executions in ${elapsed}s ($(( total / (elapsed > 0 ? elapsed : 1) ))/s)"
if [ "$rc" -eq 0 ] && [ -z "$problems" ]; then
  echo "fuzz-long: $bin: clean"
elif [ "$rc" -eq 72 ] && [ -z "$problems" ]; then
  # libFuzzer's exit status after an interrupt.
  echo "fuzz-long: $bin: interrupted, clean"
else
  echo "fuzz-long: $bin: NOT clean (exit $rc):"
  echo "$problems"
  exit 1
fi
