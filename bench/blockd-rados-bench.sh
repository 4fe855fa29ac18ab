#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-rados-bench.sh - vbk-blockd on a RADOS pool against its real
# peer, qemu-nbd serving an RBD image of the same pool through librbd,
# in one run, interleaved.  Both are driven by the same client (fio's
# nbd engine over a Unix socket), so both numbers include the NBD hop.
# qemu-nbd runs twice per row: with --cache=writeback (librbd's cache
# on; it stays write-through until the client's first FLUSH, which fio
# does not send here) and with --cache=none (librbd's cache off).
# Rows: 4 KiB random writes and reads at queue depth 1 and 16, 1 MiB
# sequential writes and reads at queue depth 8.  `rbd bench` (librbd
# without NBD, cache on and off) runs beside the rows at depth > 1 as a
# reference.  Every row runs REPEAT times, the servers in a rotating
# order, and the table shows medians and the ratios vbk / qemu-nbd.
# Beside each NBD server's figure: its CPU time per request (user +
# system, from /proc over the whole fio run, ramp included), which the
# machine's load moves less than latency: on a busy machine QD1 rows
# measure mostly the scheduler, the CPU per request still shows what the
# server itself costs (only at rates where the server's idle work, the
# librados tick and heartbeat threads, is small beside it: at tens of
# IOPS that idle work is most of it).  Not a test.
#
# Env: CEPH_CONF (an existing cluster with pool POOL; else a throwaway
# one is started with deploy/ceph-dev-cluster.sh), POOL (vbk), VBK_BIN,
# SIZE (of each image, default 2G), RUNTIME (seconds per fio run,
# default 5), REPEAT (default 3), RBD_BENCH (1: add the rbd bench
# columns, default 1), ROWS (a subset of the row names, default all),
# BLOCKD_ARGS (extra vbk-blockd options).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
pool=${POOL:-vbk}
size=${SIZE:-2G}
runtime=${RUNTIME:-5}
repeat=${REPEAT:-3}
rbd_bench=${RBD_BENCH:-1}
rows=${ROWS:-"4K-randwrite-QD1 4K-randwrite-QD16 4K-randread-QD1 4K-randread-QD16 1M-seqwrite-QD8 1M-seqread-QD8"}
dir=$(mktemp -d /tmp/vbk-rbench.XXXXXX)
pid=
qpid=
started_cluster=
cleanup ()
{
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
  wait 2>/dev/null || true
  [ -n "${rbdimg:-}" ] && rbd -c "$CEPH_CONF" rm "$pool/$rbdimg" >/dev/null 2>&1
  [ -n "$started_cluster" ] && "$here/deploy/ceph-dev-cluster.sh" stop "$dir/ceph" >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

if [ -z "${CEPH_CONF:-}" ]; then
  echo "starting a throwaway cluster ..." >&2
  CEPH_CONF=$("$here/deploy/ceph-dev-cluster.sh" start "$dir/ceph" | tail -n 1)
  started_cluster=1
fi
export CEPH_CONF
ns=bench$$
store="rados:$pool/$ns?conf=$CEPH_CONF"
rbdimg=vbkbench$$

"$bin/vbk" --store "$store" image create bench --size "$size" >/dev/null
rbd -c "$CEPH_CONF" create --size "$size" "$pool/$rbdimg"
# shellcheck disable=SC2086
"$bin/vbk-blockd" --store "$store" --socket "$dir/vbk.sock" --host-id bench \
  ${BLOCKD_ARGS:-} 2>"$dir/vbk.log" &
pid=$!
for _ in $(seq 100); do [ -S "$dir/vbk.sock" ] && break; sleep 0.05; done
[ -S "$dir/vbk.sock" ] || { echo "vbk-blockd did not start: $(cat "$dir/vbk.log")" >&2; exit 1; }

# qemu_start MODE: qemu-nbd on the RBD image with --cache=MODE; prints
# the URI.  One at a time: two librbd clients of one image would trade
# its exclusive lock on every write.
qemu_start ()
{
  rm -f "$dir/q.sock"
  qemu-nbd -f raw -t --cache="$1" -k "$dir/q.sock" -x bench \
    "rbd:$pool/$rbdimg:conf=$CEPH_CONF:id=admin" 2>"$dir/qemu.log" &
  qpid=$!
  for _ in $(seq 200); do [ -S "$dir/q.sock" ] && break; sleep 0.05; done
  [ -S "$dir/q.sock" ] || { echo "qemu-nbd did not start: $(cat "$dir/qemu.log")" >&2; exit 1; }
}
qemu_stop ()
{
  kill "$qpid" 2>/dev/null || true
  wait "$qpid" 2>/dev/null || true
  qpid=
}

vuri="nbd+unix:///bench?socket=$dir/vbk.sock"
quri="nbd+unix:///bench?socket=$dir/q.sock"

# Fill both (reads of unwritten objects would measure nothing).
echo "filling both images ($size each) ..." >&2
fio --name=fill --ioengine=nbd --uri="$vuri" --rw=write --bs=4M --iodepth=16 \
  --size="$size" --output=/dev/null >/dev/null 2>&1
qemu_start none
fio --name=fill --ioengine=nbd --uri="$quri" --rw=write --bs=4M --iodepth=16 \
  --size="$size" --output=/dev/null >/dev/null 2>&1
qemu_stop

# cpu_ticks PID: user + system clock ticks of process PID so far.
cpu_ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# fio_run URI RW BS QD SERVER-PID -> "IOPS MiB/s CPU-US-PER-REQUEST"
fio_run ()
{
  local c0 c1
  c0=$(cpu_ticks "$5")
  fio --name=t --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
    --time_based --runtime="$runtime" --ramp_time=1 --size="$size" \
    --output-format=json --output="$dir/fio.json" >/dev/null 2>&1
  c1=$(cpu_ticks "$5")
  python3 - "$dir/fio.json" "$((c1 - c0))" "$(getconf CLK_TCK)" "$runtime" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
iops = j["read"]["iops"] + j["write"]["iops"]
bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576
# Requests over the whole run: the measured rate over the ramp too.
reqs = iops * (float(sys.argv[4]) + 1)
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6
print("%.0f %.1f %.0f" % (iops, bw, cpu_us / reqs if reqs else 0))
EOF
}

# rbd_run TYPE SIZE PATTERN THREADS [rbd options] -> "IOPS MiB/s"
rbd_run ()
{
  local total
  case "$2" in 4K) total=64M ;; *) total=1G ;; esac
  rbd -c "$CEPH_CONF" "${@:5}" bench --io-type "$1" --io-size "$2" \
    --io-pattern "$3" --io-threads "$4" --io-total "$total" \
    "$pool/$rbdimg" 2>&1 |
    awk '/^elapsed:/ {
      m = $8; u = $9
      if (u == "KiB/s") m /= 1024; else if (u == "GiB/s") m *= 1024
      else if (u == "B/s") m /= 1048576
      printf "%.0f %.1f\n", $6, m }'
}

# row NAME -> "RW BS QD RBDTYPE RBDSIZE RBDPATTERN"
row ()
{
  case "$1" in
    4K-randwrite-QD1) echo "randwrite 4k 1 write 4K rand" ;;
    4K-randwrite-QD16) echo "randwrite 4k 16 write 4K rand" ;;
    4K-randread-QD1) echo "randread 4k 1 read 4K rand" ;;
    4K-randread-QD16) echo "randread 4k 16 read 4K rand" ;;
    1M-seqwrite-QD8) echo "write 1M 8 write 1M seq" ;;
    1M-seqread-QD8) echo "read 1M 8 read 1M seq" ;;
    *) echo "unknown row $1" >&2; exit 1 ;;
  esac
}

# value NAME -> the figure compared: IOPS for 4K rows, MiB/s for 1M rows
value () { case "$1" in 4K*) echo "$2" ;; *) echo "$3" ;; esac; }
# cpu_of IOPS MIBS [CPU] -> the CPU per request, or - (rbd bench)
cpu_of () { echo "${3:--}"; }

res=$dir/results
: >"$res"
for ((rep = 0; rep < repeat; rep++)); do
  for name in $rows; do
    read -r rw bs qd rt rs rp < <(row "$name")
    servers=(vbk wb nc)
    [ "$rbd_bench" = 1 ] && [ "$qd" -gt 1 ] && servers+=(rbd rbd-nc)
    # Rotate the order each repeat, so no server always runs first.
    n=${#servers[@]}
    for ((k = 0; k < n; k++)); do
      s=${servers[$(((k + rep) % n))]}
      case "$s" in
        vbk) out=$(fio_run "$vuri" "$rw" "$bs" "$qd" "$pid") ;;
        wb|nc)
          if [ "$s" = wb ]; then qemu_start writeback; else qemu_start none; fi
          out=$(fio_run "$quri" "$rw" "$bs" "$qd" "$qpid")
          qemu_stop ;;
        rbd) out=$(rbd_run "$rt" "$rs" "$rp" "$qd") ;;
        rbd-nc) out=$(rbd_run "$rt" "$rs" "$rp" "$qd" --rbd_cache=false) ;;
      esac
      # shellcheck disable=SC2086
      echo "$name $s $(value "$name" $out) $(cpu_of $out)" >>"$res"
      echo "  repeat $((rep + 1))/$repeat $name $s: $out" >&2
    done
  done
done

python3 - "$res" "$rows" "$repeat" <<'EOF'
import statistics, sys
vals, cpu = {}, {}
for line in open(sys.argv[1]):
    name, s, v, c = line.split()
    vals.setdefault((name, s), []).append(float(v))
    if c != "-":
        cpu.setdefault((name, s), []).append(float(c))
def cmed(name, s):
    v = cpu.get((name, s))
    return statistics.median(v) if v else None
def med(name, s):
    v = vals.get((name, s))
    return statistics.median(v) if v else None
def cell(x):
    return "%.0f" % x if x is not None else "-"
def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"
print("medians of %s runs; 4K rows in IOPS, 1M rows in MiB/s" % sys.argv[3])
print("wb / nc: qemu-nbd on librbd with --cache=writeback / none; "
      "rbd / rbd-nc: rbd bench, cache on / off")
print("%-18s %8s %8s %8s %8s %8s %8s %8s" % ("workload", "vbk", "qemu-wb",
      "qemu-nc", "rbd", "rbd-nc", "vbk/wb", "vbk/nc"))
for name in sys.argv[2].split():
    v, w, n = med(name, "vbk"), med(name, "wb"), med(name, "nc")
    print("%-18s %8s %8s %8s %8s %8s %8s %8s" % (name, cell(v), cell(w),
          cell(n), cell(med(name, "rbd")), cell(med(name, "rbd-nc")),
          ratio(v, w), ratio(v, n)))
print("server CPU per request, us (median): vbk, qemu-nbd wb, qemu-nbd nc")
for name in sys.argv[2].split():
    print("  %-18s %8s %8s %8s" % (name, cell(cmed(name, "vbk")),
          cell(cmed(name, "wb")), cell(cmed(name, "nc"))))
print("all runs (vbk wb nc):")
for name in sys.argv[2].split():
    print("  %-18s %s" % (name, " | ".join(
        " ".join("%.0f" % x for x in vals.get((name, s), []))
        for s in ("vbk", "wb", "nc"))))
EOF
