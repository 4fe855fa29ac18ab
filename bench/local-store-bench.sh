#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# local-store-bench.sh - 4 KiB random I/O through vbk-blockd on the local
# store at real disk sizes, against nbdkit's file plugin on a raw file of
# the same size, same machine, same run, interleaved: a fully written
# 16 GiB disk (4096 objects of 4 MiB) and a thin 64 GiB one (random
# writes create up to 16384 object files: more than the fd cache holds at
# RLIMIT_NOFILE 20000, so dirty files are evicted while the test runs).
# Optionally a second vbk-blockd binary (OLD_BLOCKD=path) on the same
# store, to compare builds.  Not a test: numbers depend on the machine.
# Env: VBK_BIN (build/bin), FULL (16G), THIN (64G), RUNTIME (4), REPEAT (1),
# BENCH_DIR (scratch directory; default a new one under /tmp).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
full=${FULL:-16G}
thin=${THIN:-64G}
runtime=${RUNTIME:-4}
repeat=${REPEAT:-1}
dir=${BENCH_DIR:-$(mktemp -d /tmp/vbk-sbench.XXXXXX)}
pids=()
cleanup () {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
for t in fio nbdkit; do
  command -v $t >/dev/null || { echo "local-store-bench: $t is missing" >&2; exit 1; }
done
wait_sock () { for _ in $(seq 200); do [ -S "$1" ] && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }

store="local:$dir/store"
"$bin/vbk" --store "$store" image create full --size "$full" >/dev/null
"$bin/vbk" --store "$store" image create thin --size "$thin" >/dev/null
truncate -s "$full" "$dir/full.raw"
truncate -s "$thin" "$dir/thin.raw"

start_vbk () {   # start_vbk NAME BINARY
  "$2" --store "$store" --socket "$dir/$1.sock" --host-id "bench-$1" \
    2>"$dir/$1.log" &
  pids+=($!)
  wait_sock "$dir/$1.sock"
}
start_vbk vbk "$bin/vbk-blockd"
nbdkit -f -U "$dir/nbdkit-full.sock" file "$dir/full.raw" & pids+=($!)
nbdkit -f -U "$dir/nbdkit-thin.sock" file "$dir/thin.raw" & pids+=($!)
wait_sock "$dir/nbdkit-full.sock"; wait_sock "$dir/nbdkit-thin.sock"

echo "writing all of the $full disk on both servers ..." >&2
for u in "nbd+unix:///full?socket=$dir/vbk.sock" "nbd+unix:///?socket=$dir/nbdkit-full.sock"; do
  fio --name=fill --ioengine=nbd --uri="$u" --rw=write --bs=1M --iodepth=8 \
    --size="$full" --output=/dev/null
done

servers=(vbk nbdkit)
if [ -n "${OLD_BLOCKD:-}" ]; then
  start_vbk old "$OLD_BLOCKD"
  servers+=(old)
fi
uri () {   # uri SERVER DISK
  case $1 in
    nbdkit) echo "nbd+unix:///?socket=$dir/nbdkit-$2.sock" ;;
    *) echo "nbd+unix:///$2?socket=$dir/$1.sock" ;;
  esac
}
run () {   # run URI RW IODEPTH -> kIOPS
  local out=$dir/fio.json
  fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs=4k --iodepth="$3" \
    --time_based --runtime="$runtime" --ramp_time=1 --randrepeat=0 \
    --output-format=json --output="$out" >/dev/null 2>&1 || { echo fail; return; }
  python3 - "$out" "$2" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
k = "read" if "read" in sys.argv[2] else "write"
print("%.1f" % (j[k]["iops"] / 1000))
PY
}

printf "%-6s %-20s" disk workload
for s in "${servers[@]}"; do printf " %10s" "$s"; done
printf "   (kIOPS, median of %s)\n" "$repeat"
for disk in full thin; do
  for w in "randwrite 1" "randwrite 32" "randread 1" "randread 32"; do
    set -- $w
    declare -A res=()
    for ((i = 0; i < repeat; i++)); do
      for s in "${servers[@]}"; do
        res[$s]+="$(run "$(uri "$s" "$disk")" "$1" "$2") "
      done
    done
    printf "%-6s %-20s" "$disk" "4K-$1-QD$2"
    for s in "${servers[@]}"; do
      printf " %10s" "$(echo ${res[$s]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    done
    echo
    unset res
  done
done
echo "object files in the store: $(ls "$dir/store/obj" | wc -l)" >&2
