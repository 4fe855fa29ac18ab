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
# Beside each NBD server's figure: fio's completion latency (p50 and
# p99, in microseconds) and the server's CPU time per request (user +
# system, from /proc), which the machine's load moves less than
# latency: on a busy machine QD1 rows measure mostly the scheduler, the
# CPU per request still shows what the server itself costs (only at
# rates where the server's idle work, the librados tick and heartbeat
# threads, is small beside it: at tens of IOPS that idle work is most of
# it).  The CPU is sampled inside fio's measured time (after its ramp,
# before its end), so it leaves out what a connection costs once: each
# fio run is a new connection, and vbk-blockd opens the export for it (a
# store connection of its own, the image, the lease at the first write:
# tens of milliseconds of CPU) where qemu-nbd has its image open
# already.  VBK_BIN_BASE (the bin directory of another build, say
# main's) adds that build's vbk-blockd as the server "base", on an image
# of its own in the same pool, in the same rotation: this build against
# the base in one run.  Not a test.
#
# Env: CEPH_CONF (an existing cluster with pool POOL; else a throwaway
# one is started with deploy/ceph-dev-cluster.sh), POOL (vbk), VBK_BIN,
# SIZE (of each image, default 2G), RUNTIME (seconds per fio run,
# default 5), REPEAT (default 3), RBD_BENCH (1: add the rbd bench
# columns, default 1), ROWS (a subset of the row names, default all),
# BLOCKD_ARGS (extra vbk-blockd options), VBK_BIN_BASE (see above).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
pool=${POOL:-vbk}
size=${SIZE:-2G}
runtime=${RUNTIME:-5}
repeat=${REPEAT:-3}
rbd_bench=${RBD_BENCH:-1}
rows=${ROWS:-"4K-randwrite-QD1 4K-randwrite-QD16 4K-randread-QD1 4K-randread-QD16 1M-seqwrite-QD8 1M-seqread-QD8"}
base_bin=${VBK_BIN_BASE:-}
dir=$(mktemp -d /tmp/vbk-rbench.XXXXXX)
pid=
bpid=
qpid=
started_cluster=
cleanup ()
{
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$bpid" ] && kill "$bpid" 2>/dev/null
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
# wait_sock SOCK LOG: until a vbk-blockd listens on SOCK.
wait_sock ()
{
  for _ in $(seq 400); do [ -S "$1" ] && return; sleep 0.05; done
  echo "vbk-blockd did not start: $(cat "$2")" >&2
  exit 1
}
wait_sock "$dir/vbk.sock" "$dir/vbk.log"
if [ -n "$base_bin" ]; then
  # An image and a host id of its own: the two daemons never trade a
  # lease.
  "$base_bin/vbk" --store "$store" image create benchbase --size "$size" \
    >/dev/null
  # shellcheck disable=SC2086
  "$base_bin/vbk-blockd" --store "$store" --socket "$dir/base.sock" \
    --host-id bench-base ${BLOCKD_ARGS:-} 2>"$dir/base.log" &
  bpid=$!
  wait_sock "$dir/base.sock" "$dir/base.log"
fi

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
buri="nbd+unix:///benchbase?socket=$dir/base.sock"
quri="nbd+unix:///bench?socket=$dir/q.sock"

# Fill them all (reads of unwritten objects would measure nothing).
echo "filling the images ($size each) ..." >&2
fio --name=fill --ioengine=nbd --uri="$vuri" --rw=write --bs=4M --iodepth=16 \
  --size="$size" --output=/dev/null >/dev/null 2>&1
if [ -n "$base_bin" ]; then
  fio --name=fill --ioengine=nbd --uri="$buri" --rw=write --bs=4M \
    --iodepth=16 --size="$size" --output=/dev/null >/dev/null 2>&1
fi
qemu_start none
fio --name=fill --ioengine=nbd --uri="$quri" --rw=write --bs=4M --iodepth=16 \
  --size="$size" --output=/dev/null >/dev/null 2>&1
qemu_stop

# cpu_ticks PID: user + system clock ticks of process PID so far.
cpu_ticks () { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# fio_run URI RW BS QD SERVER-PID ->
#   "IOPS MiB/s CPU-US-PER-REQUEST P50-US P99-US"
# The server's CPU is sampled from 0.3 s after fio's ramp (1 s, counted
# from its start: the connection is made within it) to 0.3 s before the
# end of its measured time; the requests of that window are fio's rate
# times the window's length.
fio_run ()
{
  local c0 c1 f t0 t1
  fio --name=t --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
    --time_based --runtime="$runtime" --ramp_time=1 --size="$size" \
    --output-format=json --output="$dir/fio.json" >/dev/null 2>&1 &
  f=$!
  sleep 1.3
  t0=$(date +%s.%N)
  c0=$(cpu_ticks "$5")
  sleep "$(awk -v r="$runtime" 'BEGIN { print (r > 0.7 ? r - 0.6 : 0.1) }')"
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$5")
  wait "$f"
  python3 - "$dir/fio.json" "$((c1 - c0))" "$(getconf CLK_TCK)" "$t0" "$t1" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
iops = j["read"]["iops"] + j["write"]["iops"]
bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576
reqs = iops * (float(sys.argv[5]) - float(sys.argv[4]))
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6
k = "write" if j["write"]["total_ios"] else "read"
pct = j[k]["clat_ns"].get("percentile", {})
print("%.0f %.1f %.0f %.0f %.0f" % (iops, bw, cpu_us / reqs if reqs else 0,
                                    pct.get("50.000000", 0) / 1000,
                                    pct.get("99.000000", 0) / 1000))
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
# rest_of IOPS MIBS [CPU P50 P99] -> "CPU P50 P99", "- - -" for rbd bench
rest_of () { echo "${3:--} ${4:--} ${5:--}"; }

res=$dir/results
: >"$res"
for ((rep = 0; rep < repeat; rep++)); do
  for name in $rows; do
    read -r rw bs qd rt rs rp < <(row "$name")
    servers=(vbk wb nc)
    [ -n "$base_bin" ] && servers+=(base)
    [ "$rbd_bench" = 1 ] && [ "$qd" -gt 1 ] && servers+=(rbd rbd-nc)
    # Rotate the order each repeat, so no server always runs first.
    n=${#servers[@]}
    for ((k = 0; k < n; k++)); do
      s=${servers[$(((k + rep) % n))]}
      case "$s" in
        vbk) out=$(fio_run "$vuri" "$rw" "$bs" "$qd" "$pid") ;;
        base) out=$(fio_run "$buri" "$rw" "$bs" "$qd" "$bpid") ;;
        wb|nc)
          if [ "$s" = wb ]; then qemu_start writeback; else qemu_start none; fi
          out=$(fio_run "$quri" "$rw" "$bs" "$qd" "$qpid")
          qemu_stop ;;
        rbd) out=$(rbd_run "$rt" "$rs" "$rp" "$qd") ;;
        rbd-nc) out=$(rbd_run "$rt" "$rs" "$rp" "$qd" --rbd_cache=false) ;;
      esac
      # shellcheck disable=SC2086
      echo "$name $s $(value "$name" $out) $(rest_of $out)" >>"$res"
      echo "  repeat $((rep + 1))/$repeat $name $s: $out" >&2
    done
  done
done

python3 - "$res" "$rows" "$repeat" "$base_bin" <<'EOF'
import statistics, sys
vals, cpu, p50, p99 = {}, {}, {}, {}
for line in open(sys.argv[1]):
    name, s, v, c, l50, l99 = line.split()
    vals.setdefault((name, s), []).append(float(v))
    for d, x in ((cpu, c), (p50, l50), (p99, l99)):
        if x != "-":
            d.setdefault((name, s), []).append(float(x))
def med(d, name, s):
    v = d.get((name, s))
    return statistics.median(v) if v else None
def cell(x):
    return "%.0f" % x if x is not None else "-"
def ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "-"
rows = sys.argv[2].split()
base = sys.argv[4] != ""
nbd = ("vbk", "base", "wb", "nc") if base else ("vbk", "wb", "nc")
print("medians of %s runs; 4K rows in IOPS, 1M rows in MiB/s" % sys.argv[3])
print("wb / nc: qemu-nbd on librbd with --cache=writeback / none; "
      "rbd / rbd-nc: rbd bench, cache on / off")
if base:
    print("base: the vbk-blockd of VBK_BIN_BASE, same runs, interleaved")
print("%-18s %8s %8s %8s %8s %8s %8s %8s%s" % (
    "workload", "vbk", "qemu-wb", "qemu-nc", "rbd", "rbd-nc", "vbk/wb",
    "vbk/nc", " %8s %8s" % ("base", "vbk/base") if base else ""))
for name in rows:
    v, w, n = (med(vals, name, "vbk"), med(vals, name, "wb"),
               med(vals, name, "nc"))
    b = med(vals, name, "base")
    print("%-18s %8s %8s %8s %8s %8s %8s %8s%s" % (
        name, cell(v), cell(w), cell(n), cell(med(vals, name, "rbd")),
        cell(med(vals, name, "rbd-nc")), ratio(v, w), ratio(v, n),
        " %8s %8s" % (cell(b), ratio(v, b)) if base else ""))
print("server CPU per request, us (median): " + ", ".join(nbd))
for name in rows:
    print("  %-18s %s" % (name, " ".join("%8s" % cell(med(cpu, name, s))
                                         for s in nbd)))
print("fio completion latency p50/p99, us (medians): " + ", ".join(nbd))
for name in rows:
    print("  %-18s %s" % (name, " ".join(
        "%13s" % (cell(med(p50, name, s)) + "/" + cell(med(p99, name, s)))
        for s in nbd)))
print("all runs (%s):" % " ".join(nbd))
for name in rows:
    print("  %-18s %s" % (name, " | ".join(
        " ".join("%.0f" % x for x in vals.get((name, s), []))
        for s in nbd)))
EOF
