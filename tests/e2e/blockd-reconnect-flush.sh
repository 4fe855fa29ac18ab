#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-reconnect-flush.sh - a client that writes, vanishes without a
# flush and reconnects at once (as QEMU's reconnect-delay does) races
# the close of its previous export (VBK_TEST_BACKENDS).  The new
# connection's FLUSH must cover the writes acknowledged on the old one,
# and the daemon must never fence its own closing export as "an earlier
# run".  Checked through the store: after the daemon stops, vbk image
# export reads every acknowledged write back.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

store=$(new_store)
sock=$TEST_DIR/blockd.sock
log=$TEST_DIR/blockd.log
export PYTHONPATH=$VBK_SRC/tests
ROUNDS=12

vbk --store "$store" image create disk --size 64M >/dev/null
start_blockd pid "$sock"

python3 - "$sock" "$ROUNDS" <<'PYEOF' || fail "reconnect and flush"
import sys, time, nbdraw
path, rounds = sys.argv[1], int(sys.argv[2])
MB = 1 << 20
for r in range(rounds):
    s = nbdraw.connect(path)
    nbdraw.go(s, "disk")
    # 8 MiB of acknowledged writes (round r writes its own byte), no flush.
    for i in range(8):
        nbdraw.request(s, nbdraw.CMD_WRITE, (r % 4) * 8 * MB + i * MB, MB,
                       100 + i, bytes([r + 1]) * MB)
    for i in range(8):
        err, h, _ = nbdraw.simple(s)
        assert err == 0, "write failed: %d" % err
    s.close()                   # vanish: no FLUSH, no DISC
    # Reconnect at once (after a growing pause, to hit the close at
    # different points); the old export is closing meanwhile.
    time.sleep(0.002 * r)
    s = nbdraw.connect(path)
    nbdraw.go(s, "disk")
    nbdraw.request(s, nbdraw.CMD_FLUSH, 0, 0, 1)
    err, h, _ = nbdraw.simple(s)
    assert err == 0, "FLUSH after reconnect failed: %d (round %d)" % (err, r)
    nbdraw.request(s, nbdraw.CMD_READ, (r % 4) * 8 * MB, 8 * MB, 2)
    err, h, data = nbdraw.simple(s, 8 * MB)
    assert err == 0 and data == bytes([r + 1]) * 8 * MB, "round %d: data" % r
    # The next round writes through a fresh connection too.
    nbdraw.request(s, nbdraw.CMD_DISC, 0, 0, 3)
    s.close()
PYEOF

stop_blockd pid
if grep -E "earlier run of this daemon|fencing|lease lost|fenced" "$log"; then
  fail "the daemon fenced its own export on a reconnect"
fi

# Durable and complete: the last four rounds' writes, read from the store.
vbk --store "$store" image export disk "$TEST_DIR/disk.raw" >/dev/null
python3 - "$TEST_DIR/disk.raw" "$ROUNDS" <<'PYEOF' || fail "data in the store"
import sys
raw, rounds = open(sys.argv[1], "rb").read(), int(sys.argv[2])
MB = 1 << 20
for r in range(rounds - 4, rounds):
    want = bytes([r + 1]) * 8 * MB
    got = raw[(r % 4) * 8 * MB:(r % 4 + 1) * 8 * MB]
    assert got == want, "round %d's writes are not in the store" % r
PYEOF
echo "blockd-reconnect-flush: ok"
