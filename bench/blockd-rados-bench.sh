#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-rados-bench.sh - vbk-blockd on a RADOS pool against `rbd bench`
# on the same pool, in one run, interleaved: 4 KiB random writes and
# reads and 4 MiB sequential writes and reads, 16 in flight each.  vbk is
# driven through NBD by fio's nbd engine over a Unix socket (so its
# numbers include the NBD hop that rbd bench does not have).  rbd bench
# runs twice: as it comes (librbd's writeback cache on, which absorbs
# small writes in the client) and with --rbd_cache=false (every write
# goes to the OSDs before it is acknowledged, as with vbk).  Prints a
# table with the ratios.  Not a test.
#
# Env: CEPH_CONF (an existing cluster with pool POOL; else a throwaway
# one is started with deploy/ceph-dev-cluster.sh), POOL (vbk), VBK_BIN,
# RUNTIME (seconds per fio run, default 5), TOTAL_4K / TOTAL_4M (bytes
# rbd bench moves, default 128M / 1G).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
pool=${POOL:-vbk}
runtime=${RUNTIME:-5}
total4k=${TOTAL_4K:-128M}
total4m=${TOTAL_4M:-1G}
dir=$(mktemp -d /tmp/vbk-rbench.XXXXXX)
pid=
started_cluster=
cleanup ()
{
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null || true
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

"$bin/vbk" --store "$store" image create bench --size 2G >/dev/null
rbd -c "$CEPH_CONF" create --size 2G "$pool/$rbdimg"
"$bin/vbk-blockd" --store "$store" --socket "$dir/vbk.sock" --host-id bench \
  2>"$dir/vbk.log" &
pid=$!
for _ in $(seq 100); do [ -S "$dir/vbk.sock" ] && break; sleep 0.05; done
uri="nbd+unix:///bench?socket=$dir/vbk.sock"

# Fill both (reads of unwritten objects would measure nothing).
fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=4M --iodepth=16 \
  --size=2G --output=/dev/null >/dev/null 2>&1
rbd -c "$CEPH_CONF" bench --io-type write --io-size 4M --io-pattern seq \
  --io-threads 16 --io-total 2G "$pool/$rbdimg" >/dev/null 2>&1

vbk_run ()   # rw bs -> "IOPS MiB/s"
{
  fio --name=t --ioengine=nbd --uri="$uri" --rw="$1" --bs="$2" --iodepth=16 \
    --time_based --runtime="$runtime" --ramp_time=1 --size=2G \
    --output-format=json --output="$dir/fio.json" >/dev/null 2>&1
  python3 - "$dir/fio.json" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
iops = j["read"]["iops"] + j["write"]["iops"]
bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1048576
print("%.0f %.1f" % (iops, bw))
EOF
}

rbd_run ()   # type size pattern total [rbd options] -> "IOPS MiB/s"
{
  local extra=("${@:5}")
  rbd -c "$CEPH_CONF" "${extra[@]}" bench --io-type "$1" --io-size "$2" --io-pattern "$3" \
    --io-threads 16 --io-total "$4" "$pool/$rbdimg" 2>&1 |
    awk '/^elapsed:/ {
      m = $8; u = $9
      if (u == "KiB/s") m /= 1024; else if (u == "GiB/s") m *= 1024
      else if (u == "B/s") m /= 1048576
      printf "%.0f %.1f\n", $6, m }'
}

printf "%-14s %10s %10s %10s %10s %9s %9s\n" workload vbk-IOPS vbk-MiB/s \
  rbd-IOPS rbd-nc-IOPS vbk/rbd vbk/rbd-nc
for w in "4K-randwrite randwrite 4k write 4K rand $total4k" \
         "4K-randread randread 4k read 4K rand $total4k" \
         "4M-seqwrite write 4M write 4M seq $total4m" \
         "4M-seqread read 4M read 4M seq $total4m"; do
  set -- $w
  read -r vi vb < <(vbk_run "$2" "$3")
  read -r ri rb < <(rbd_run "$4" "$5" "$6" "$7")
  read -r ni nb < <(rbd_run "$4" "$5" "$6" "$7" --rbd_cache=false)
  printf "%-14s %10s %10s %10s %10s %9s %9s\n" "$1" "$vi" "$vb" "$ri" "$ni" \
    "$(python3 -c "print('%.2f' % ($vi / $ri if $ri else 0))")" \
    "$(python3 -c "print('%.2f' % ($vi / $ni if $ni else 0))")"
done
rbd -c "$CEPH_CONF" rm "$pool/$rbdimg" >/dev/null 2>&1 || true
