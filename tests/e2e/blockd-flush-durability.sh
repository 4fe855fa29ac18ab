#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-flush-durability.sh - NBD FLUSH through vbk-blockd on the local
# store keeps its promise, with fdatasync slowed or failing underneath.
#
# vbk-blockd runs with the sync interposer (tests/shim/syncshim.c,
# LD_PRELOAD) driven by a control file, and logs every affected sync.
#  1. Multi-conn: connection 1 writes and sends FLUSH while every sync of
#     an object file is slowed to 2 s; connection 2 then sends FLUSH.
#     Connection 2's FLUSH may be acknowledged only after the sync of the
#     data written before it has finished (CAN_MULTI_CONN: a flush on any
#     connection covers writes completed on all of them).
#  2. Sticky errors: with syncs failing (EIO), FLUSH fails; with the disk
#     healthy again, FLUSH still fails (the lost writes cannot be brought
#     back by a later sync), on every connection, until vbk-blockd
#     reopens the store.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
requires_syncshim

store=local:$(mktemp -d "$TEST_DIR/store.XXXXXX")
vbk --store "$store" image create disk --size 64M >/dev/null

export CTL=$TEST_DIR/sync.ctl SYNCLOG=$TEST_DIR/sync.events
: >"$CTL"
: >"$SYNCLOG"
# An ASan build wants its runtime first; the interposer only wraps two
# libc calls.
VBK_SYNCSHIM_CTL=$CTL VBK_SYNCSHIM_LOG=$SYNCLOG LD_PRELOAD=$VBK_SYNCSHIM \
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 \
  start_blockd pid "$TEST_DIR/b.sock"
export URI="nbd+unix:///disk?socket=$TEST_DIR/b.sock"

# ---- 1. A second connection's FLUSH waits for the first one's sync ----------
nbdsh -c - <<'PY' || fail "concurrent flush: $(tail -20 "$TEST_DIR/b.log")"
import nbd, os, time
ctl, log, uri = os.environ["CTL"], os.environ["SYNCLOG"], os.environ["URI"]
h1 = nbd.NBD(); h1.connect_uri(uri)
h2 = nbd.NBD(); h2.connect_uri(uri)
assert h1.can_multi_conn()
h1.pwrite(b"D" * 65536, 5 << 20)
open(ctl, "w").write("obj/ 2000 0\n")
h1.aio_flush()
# Wait until connection 1's flush is inside the slowed sync.
t = time.monotonic()
while " start " not in open(log).read():
    assert time.monotonic() - t < 30, "no sync started"
    h1.poll(0)
    time.sleep(0.01)
h2.flush()
acked = time.monotonic_ns() // 1000000
events = open(log).read().split("\n")
done = [int(l.split()[0]) for l in events if " done " in l and "/obj/" in l]
assert done and min(done) <= acked, \
    "connection 2's FLUSH was acknowledged at %d before the data was synced (%s)" % (acked, events)
while h1.aio_in_flight() > 0:
    h1.poll(-1)
print("concurrent flush: acknowledged %d ms after the sync ended" % (acked - min(done)))
open(ctl, "w").write("")
h1.shutdown(); h2.shutdown()
PY

# ---- 2. A failed sync makes every later FLUSH fail -----------------------------
nbdsh -c - <<'PY' || fail "sticky flush error: $(tail -20 "$TEST_DIR/b.log")"
import nbd, os
ctl, uri = os.environ["CTL"], os.environ["URI"]
h1 = nbd.NBD(); h1.connect_uri(uri)
h2 = nbd.NBD(); h2.connect_uri(uri)
def flush_fails(h, what):
    try:
        h.flush()
    except nbd.Error as e:
        print("%s: FLUSH failed as it must: %s" % (what, e))
        return
    raise AssertionError("%s: FLUSH succeeded" % what)
h1.pwrite(b"E" * 65536, 9 << 20)
open(ctl, "w").write("obj/ 0 5\n")          # EIO
flush_fails(h1, "while syncs fail")
open(ctl, "w").write("")
flush_fails(h1, "disk healthy again")
flush_fails(h2, "another connection")
h1.shutdown(); h2.shutdown()
PY

# A restarted daemon opens the store afresh: flushes work again.
stop_blockd pid
start_blockd pid "$TEST_DIR/b.sock"
nbdsh -u "$URI" -c 'h.pwrite(b"F" * 4096, 0); h.flush()' ||
  fail "FLUSH after a restart: $(tail -20 "$TEST_DIR/b.log")"
echo "blockd-flush-durability: OK"
