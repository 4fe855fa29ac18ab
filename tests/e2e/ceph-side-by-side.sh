#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# ceph-side-by-side.sh - deploy/ceph-dev-cluster.sh runs several clusters
# side by side (VBK_TEST_NEEDS_CEPH: it runs while the suite's cluster
# runs).  A second cluster starts in its own folder on its own ports,
# serves vbk, reports its status, and stops killing only its own
# processes: the first cluster goes on serving throughout.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires ceph
script=$VBK_SRC/deploy/ceph-dev-cluster.sh
second=$TEST_DIR/second

[ -f "$CEPH_CONF" ] || fail "the suite's cluster is not running ($CEPH_CONF)"
"$script" status "$(dirname "$CEPH_CONF")" >/dev/null ||
  fail "the suite's cluster is not healthy"
cleanup_fn "'$script' stop '$second' >/dev/null 2>&1"

conf2=$("$script" start "$second" | tail -n 1)
[ "$conf2" = "$second/ceph.conf" ] || fail "start printed '$conf2'"
[ "$conf2" != "$CEPH_CONF" ] || fail "the second cluster reuses the first's conf"
port1=$(grep -o '127.0.0.1:[0-9]*' "$CEPH_CONF" | head -n 1)
port2=$(grep -o '127.0.0.1:[0-9]*' "$conf2" | head -n 1)
[ -n "$port2" ] && [ "$port1" != "$port2" ] ||
  fail "monitor addresses collide: $port1 / $port2"
"$script" status "$second" >/dev/null || fail "status of the second cluster"
# Starting it again is harmless and prints the same path.
[ "$("$script" start "$second" | tail -n 1)" = "$conf2" ] ||
  fail "a second start did not report the running cluster"

# Both clusters serve vbk at once, each its own images.
s1="rados:$VBK_TEST_POOL/side-$$?conf=$CEPH_CONF"
s2="rados:vbk/side-$$?conf=$conf2"
vbk --store "$s1" image create one --size 8M >/dev/null
vbk --store "$s2" image create two --size 8M >/dev/null
vbk --store "$s1" image ls | grep -qw one || fail "first cluster: no image"
vbk --store "$s2" image ls | grep -qw two || fail "second cluster: no image"
vbk --store "$s2" image ls | grep -qw one && fail "the clusters share a pool"

# Stopping the second leaves the first untouched.
pids2=$(awk '{ print $2 }' "$second/pids")
"$script" stop "$second" >/dev/null
# alive PID: the process exists and is not a zombie awaiting its reaper.
alive () { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat"; }
for p in $pids2; do
  for ((i = 0; i < 40; i++)); do alive "$p" || break; sleep 0.05; done
  ! alive "$p" || fail "process $p of the second cluster survived stop"
done
! "$script" status "$second" >/dev/null 2>&1 || fail "status says the stopped cluster runs"
"$script" status "$(dirname "$CEPH_CONF")" >/dev/null ||
  fail "stopping the second cluster hurt the first"
vbk --store "$s1" image info one >/dev/null || fail "first cluster stopped serving"
echo "ceph-side-by-side: ok ($port1 and $port2)"
