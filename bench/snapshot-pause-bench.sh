#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snapshot-pause-bench.sh - how long a snapshot holds a busy image's
# writes, as the client sees it.  vbk-blockd serves an image on a RADOS
# pool (or any store: STORE); fio keeps it busy (4 KiB random writes,
# LOAD_QD in flight, on its own connection) while a probe on another
# connection writes 4 KiB at a time, one in flight, and records when
# each write was sent and how long it took; meanwhile `vbk snap create`
# runs COUNT times, one every INTERVAL seconds.  Prints p50 / p99 / max
# of: the probe's write latency outside snapshots, the longest probe
# write that overlapped each snapshot command (the pause the client
# sees), and the pause the holder reports (quiesce to resume) with its
# parts (drain of the writes in flight, flush, the snapshot's records).
# Not a test: it asserts nothing.
#
# Env: CEPH_CONF (an existing cluster with pool POOL; else a throwaway
# one is started), POOL (vbk), STORE (overrides the rados store), VBK_BIN,
# COUNT (30), INTERVAL (1), LOAD_QD (8; 0: no load), SIZE (1G).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
pool=${POOL:-vbk}
count=${COUNT:-30}
interval=${INTERVAL:-1}
load_qd=${LOAD_QD:-8}
size=${SIZE:-1G}
dir=$(mktemp -d /tmp/vbk-snapbench.XXXXXX)
pids=()
started_cluster=
cleanup ()
{
  touch "$dir/stop"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$started_cluster" ] && "$here/deploy/ceph-dev-cluster.sh" stop "$dir/ceph" >/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

py=
for p in /usr/bin/python3 python3; do
  if "$p" -c 'import nbd' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "python3 with the libnbd bindings is needed" >&2; exit 1; }

if [ -n "${STORE:-}" ]; then
  store=$STORE
else
  if [ -z "${CEPH_CONF:-}" ]; then
    echo "starting a throwaway cluster ..." >&2
    CEPH_CONF=$("$here/deploy/ceph-dev-cluster.sh" start "$dir/ceph" | tail -n 1)
    started_cluster=1
  fi
  export CEPH_CONF
  store="rados:$pool/snapbench$$?conf=$CEPH_CONF"
fi

"$bin/vbk" --store "$store" image create disk --size "$size" >/dev/null
"$bin/vbk-blockd" --store "$store" --socket "$dir/b.sock" --host-id bench \
  2>"$dir/blockd.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$dir/b.sock" ] && break; sleep 0.05; done
uri="nbd+unix:///disk?socket=$dir/b.sock"

if [ "$load_qd" -gt 0 ]; then
  fio --name=load --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k \
    --iodepth="$load_qd" --size="$size" --time_based --runtime=3600 \
    --output=/dev/null >/dev/null 2>&1 &
  pids+=($!)
fi

# The probe: QD1 4 KiB writes; "SENT_WALL_S LATENCY_S" per write.
"$py" - "$uri" "$dir/probe" "$dir/stop" <<'EOF' &
import nbd, os, sys, time
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
buf = os.urandom(4096)
out = open(sys.argv[2], "w")
i = 0
while not os.path.exists(sys.argv[3]):
    off = (i * 7919 % (size // 4096)) * 4096
    t = time.time()
    m = time.monotonic()
    h.pwrite(buf, off)
    out.write("%.6f %.6f\n" % (t, time.monotonic() - m))
    i += 1
out.close()
EOF
pids+=($!)
sleep 3

# Snapshots: "START_WALL_S END_WALL_S HOLDER_PAUSE_MS" each.
: >"$dir/snaps"
for ((i = 0; i < count; i++)); do
  t0=$(date +%s.%N)
  "$bin/vbk" -v --store "$store" snap create "disk@s$i" >/dev/null 2>"$dir/snap.err" ||
    { echo "snap create failed: $(cat "$dir/snap.err")" >&2; exit 1; }
  t1=$(date +%s.%N)
  p=$(sed -n 's/.*writes paused \([0-9.]*\) ms by the holder.*/\1/p' "$dir/snap.err")
  echo "$t0 $t1 ${p:-nan}" >>"$dir/snaps"
  sleep "$interval"
done
touch "$dir/stop"
sleep 1
# The holder's own account of each pause (snapshot.c logs it):
# "HELD DRAIN FLUSH RECORD" (ms) per snapshot.
sed -n 's/.*writes held \([0-9.]*\) ms: drain \([0-9.]*\), flush \([0-9.]*\), record \([0-9.]*\).*/\1 \2 \3 \4/p' \
  "$dir/blockd.log" | tail -n "$count" >"$dir/parts"

"$py" - "$dir/probe" "$dir/snaps" "$count" "$load_qd" "$dir/parts" <<'EOF'
import math, sys
probe = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
snaps = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))]
def row(name, v):
    print("%-44s %6d %9.2f %9.2f %9.2f" % (name, len(v), pct(v, 50), pct(v, 99),
          max(v) if v else float("nan")))
inside, outside, worst = [], [], []
for t, lat in probe:
    over = [s for s in snaps if t < s[1] and t + lat > s[0]]
    (inside if over else outside).append(lat * 1000)
for s0, s1, _ in snaps:
    w = [lat * 1000 for t, lat in probe if t < s1 and t + lat > s0]
    if w:
        worst.append(max(w))
holder = [p for _, _, p in snaps if not math.isnan(p)]
print("%d snapshots, load: 4K randwrite QD%s; probe: 4K write QD1 (ms)"
      % (int(sys.argv[3]), sys.argv[4]))
print("%-44s %6s %9s %9s %9s" % ("", "n", "p50", "p99", "max"))
row("probe write, no snapshot running", outside)
row("probe write overlapping a snapshot", inside)
row("longest probe write per snapshot (client)", worst)
row("pause reported by the holder", holder)
parts = [tuple(map(float, l.split())) for l in open(sys.argv[5]) if l.strip()]
row("  of which: drain of writes in flight", [p[1] for p in parts])
row("  of which: flush", [p[2] for p in parts])
row("  of which: the snapshot's records", [p[3] for p in parts])
EOF
