#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-open-rados-bench.sh - how long opening a big thin image takes and
# how much memory it costs, on a RADOS pool and, beside it, on the local
# store, in one run: image-open-bench (bench/image-open-bench.c) on
# images of 1 TiB and 64 TiB with 1 GiB written (one 4 KiB write per
# object), the objects contiguous from 0 and spread evenly over the image
# (the costly case: one map range per object).  Through a fault: wrapper,
# which injects nothing here but counts the bytes and store calls of the
# first open.  Each row: median and smallest of OPENS opens, resident and
# heap growth of the open, peak RSS of the process (librados included).
# The goal for 64 TiB with 1 GiB written: <= 50 ms and <= 16 MiB.
# Not a test: it asserts nothing.
#
# Env: CEPH_CONF (an existing cluster with pool POOL; else a throwaway
# one is started), POOL (vbk), VBK_BIN, OPENS (9), SIZES (the SIZE:WRITTEN
# list, default "1T:1G 64T:1G"), LOCAL (1: the local store rows too).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
pool=${POOL:-vbk}
opens=${OPENS:-9}
sizes=${SIZES:-"1T:1G 64T:1G"}
dir=$(mktemp -d /tmp/vbk-openbench.XXXXXX)
started_cluster=
cleanup ()
{
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

echo "image open, $opens opens per row; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for spread in "" --spread; do
  echo "rados:$pool ${spread:-(contiguous)}"
  # shellcheck disable=SC2086
  "$bin/image-open-bench" "fault:@rados:$pool/openbench$$?conf=$CEPH_CONF" \
    $spread --opens "$opens" $sizes
  if [ "${LOCAL:-1}" = 1 ]; then
    echo "local ${spread:-(contiguous)}"
    mkdir -p "$dir/local"
    # shellcheck disable=SC2086
    "$bin/image-open-bench" "fault:@local:$dir/local" $spread \
      --opens "$opens" $sizes
  fi
done
