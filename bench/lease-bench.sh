#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-bench.sh [BACKEND...] - lease hand-off latency between two
# vbk-blockd processes (hosts A and B) on one store: from the write
# request through the host that does not hold the lease to that write's
# acknowledgement, which covers asking the holder, its drain, flush and
# release, taking the lock, the epoch, and reloading the object map.
# Both hosts keep a client connected (as QEMU on each side of a
# migration does); one nbdsh process writes 4 KiB through A and B in
# turn.  Hand-offs are spaced 2.2 s apart so that the bounce detection
# (more than 5 in 10 s) never trips.  REPEAT hand-offs (default 20) per
# backend; prints p50, p99 and max.  Goal: p50 and p99 under 100 ms.
# Backends: local (default), rados (needs CEPH_CONF; pool $VBK_POOL,
# default vbk).  Not a test: numbers depend on the machine.
# Env: VBK_BIN (build/bin), REPEAT, LEASE_DURATION (seconds, default 15),
# VERBOSE=1 (every sample), KEEP_LOGS=DIR (copy the daemons' logs there).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
repeat=${REPEAT:-20}
duration=${LEASE_DURATION:-15}
backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(local)
dir=$(mktemp -d /tmp/vbk-lease-bench.XXXXXX)
pids=()
cleanup () {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
nbdsh () { PATH=/usr/bin:$PATH command nbdsh "$@"; }
wait_sock () { for _ in $(seq 100); do [ -S "$1" ] && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }

printf "%-8s %8s %10s %10s %10s\n" backend hand-offs "p50 ms" "p99 ms" "max ms"
for be in "${backends[@]}"; do
  case $be in
    local) store="local:$dir/store-local" ;;
    rados) store="rados:${VBK_POOL:-vbk}/lease-bench-$$?conf=${CEPH_CONF:?CEPH_CONF is needed for rados}" ;;
    *) echo "lease-bench: unknown backend $be" >&2; exit 2 ;;
  esac
  "$bin/vbk" --store "$store" image create lb --size 1G >/dev/null
  for h in A B; do
    rm -f "$dir/$h.sock"
    "$bin/vbk-blockd" --store "$store" --socket "$dir/$h.sock" --host-id "bench$h" \
      --lease-duration "$duration" 2>>"$dir/$be-$h.log" &
    pids+=($!)
  done
  wait_sock "$dir/A.sock"; wait_sock "$dir/B.sock"
  REPEAT=$repeat URI_A="nbd+unix:///lb?socket=$dir/A.sock" \
  URI_B="nbd+unix:///lb?socket=$dir/B.sock" BE=$be nbdsh -c - <<'PY'
import os, time
a, b = nbd.NBD(), nbd.NBD()
a.connect_uri(os.environ["URI_A"])
b.connect_uri(os.environ["URI_B"])
buf = b"x" * 4096
a.pwrite(buf, 0)                       # A holds the lease to begin with
lat = []
for i in range(int(os.environ["REPEAT"])):
    time.sleep(2.2)
    h = b if i % 2 == 0 else a
    t0 = time.monotonic_ns()
    h.pwrite(buf, (i + 1) * 4096)
    lat.append((time.monotonic_ns() - t0) / 1e6)
    order = lat[:]
    h.pwrite(buf, 0)                   # and a write on the holder: ~0
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))]
print("%-8s %8d %10.1f %10.1f %10.1f" % (os.environ["BE"], len(lat), pct(50), pct(99), lat[-1]))
if os.environ.get("VERBOSE"):
    print("  all (ms, in order):", " ".join("%.1f" % x for x in order))
a.shutdown(); b.shutdown()
PY
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  [ -z "${KEEP_LOGS:-}" ] || cp "$dir"/"$be"-*.log "$KEEP_LOGS"/
  "$bin/vbk" --store "$store" image rm lb >/dev/null 2>&1 || true
done
