#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-big-open.sh - a 64 TiB thin image with a few objects written far
# apart, end to end (VBK_TEST_BACKENDS): written over NBD, then served by
# a fresh vbk-blockd whose memory grows by far less than the image's
# 16 MiB of object map when it opens it; the bytes come back, nbdinfo
# --map shows exactly the written objects, `vbk image info` counts them,
# a snapshot export maps the objects of its time and not those written
# after, and `vbk image rm` removes every data object and all three map
# levels.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
requires nbdinfo
requires python3

store=$(new_store)
MiB=$((1 << 20))
TiB=$((1 << 40))
mem () { awk -v k="$2:" '$1 == k { print int($2 / 1024) }' "/proc/$1/status"; }
uri () { echo "nbd+unix:///$1?socket=$TEST_DIR/$2.sock"; }

vbk --store "$store" image create big --size 64T >/dev/null
# Object 0, one in the middle (a 4 MiB object at 17 TiB + 8 MiB), one at
# 40 TiB, and the last: four objects, three of them in different 16 GiB
# stretches (one level-2 summary byte each).
offs="0 $((17 * TiB + 8 * MiB)) $((40 * TiB)) $((64 * TiB - 4 * MiB))"
start_blockd pid_w "$TEST_DIR/w.sock"
nbdsh -u "$(uri big w)" -c "
for i, off in enumerate([${offs// /, }]):
    h.pwrite(bytes([0x41 + i]) * 65536, off + 4096)
h.flush()
" || fail "writes"
stop_blockd pid_w

json_objects () {
  vbk --store "$store" image info "$1" --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["objects"])'
}
[ "$(json_objects big)" = 4 ] || fail "image info counts $(json_objects big) objects, not 4"
vbk --store "$store" image ls | grep -qw big || fail "image ls does not list big"

# A fresh daemon opens the image on the first client: its memory grows
# by much less than the 16 MiB a whole level-0 map would take.
start_blockd pid "$TEST_DIR/r.sock"
base=$(mem "$pid" VmHWM)
nbdsh -u "$(uri big r)" -c "
for i, off in enumerate([${offs// /, }]):
    assert h.pread(65536, off + 4096) == bytes([0x41 + i]) * 65536, off
    assert h.pread(4096, off) == bytes(4096), off
" || fail "reads after reopen"
grown=$(( $(mem "$pid" VmHWM) - base ))
echo "open and read of a 64 TiB image: daemon peak grew $grown MiB"
[ "$grown" -lt 12 ] || fail "opening grew the daemon by $grown MiB"

# The allocation map: exactly the four objects are data.
nbdinfo --map "$(uri big r)" >"$TEST_DIR/map.txt" || fail "nbdinfo --map"
python3 - "$TEST_DIR/map.txt" $offs <<'PYEOF' || fail "map: $(cat "$TEST_DIR/map.txt")"
import sys
want = sorted(int(o) for o in sys.argv[2:])
data = []
for line in open(sys.argv[1]):
    off, length, typ = line.split()[:3]
    if int(typ) & 1 == 0:          # not a hole
        data.append((int(off), int(length)))
assert [o for o, l in data] == want, data
assert all(l == 4 << 20 for o, l in data), data
PYEOF
stop_blockd pid

# A snapshot, then one more object far away: the snapshot export maps
# the four of its time, the live image five.
vbk --store "$store" snap create big@s1 >/dev/null || fail "snap create"
start_blockd pid_w "$TEST_DIR/w.sock"
late=$((50 * TiB))
nbdsh -u "$(uri big w)" -c "h.pwrite(b'L' * 4096, $late); h.flush()" ||
  fail "late write"
nbdinfo --map "$(uri big@s1 w)" >"$TEST_DIR/snap.txt" || fail "nbdinfo --map at s1"
python3 - "$TEST_DIR/snap.txt" $offs <<'PYEOF' || fail "snapshot map: $(cat "$TEST_DIR/snap.txt")"
import sys
want = sorted(int(o) for o in sys.argv[2:])
data = [int(l.split()[0]) for l in open(sys.argv[1]) if int(l.split()[2]) & 1 == 0]
assert data == want, data
PYEOF
stop_blockd pid_w
[ "$(json_objects big)" = 5 ] || fail "image info counts $(json_objects big) objects, not 5"

# Removal finds every data object through the summary levels.
id=$(vbk --store "$store" image info big --json |
       python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
vbk --store "$store" snap rm big@s1 >/dev/null || fail "snap rm"
vbk --store "$store" image rm big >/dev/null || fail "image rm"
case $store in
  local:*)
    left=$(ls "${store#local:}/obj" | grep -c "$id" || true)
    ;;
  rados:*)
    ns=${store#rados:*/}
    ns=${ns%%\?*}
    left=$(rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" ls |
             grep -c "$id" || true)
    ;;
esac
[ "$left" = 0 ] || fail "$left objects of the image are left after rm"
echo "ok"
