#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-stall.sh - a client that sends many READs and never reads the
# replies must not stall anyone else (VBK_TEST_BACKENDS: replies come
# from the store's own threads): a second client's reads and writes,
# large ones included, go on while the first one sits there, and
# SIGTERM still ends the daemon promptly (the stalled client is given
# up on).  A hang is the failure; the bound on shutdown is generous.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
PY=$(python_with_nbd)
store=$(new_store)
sock=$TEST_DIR/blockd.sock
log=$TEST_DIR/blockd.log

vbk --store "$store" image create disk --size 256M >/dev/null
start_blockd pid "$sock"

# Some data to read back (large reads go through the store threads).
nbdsh -u "nbd+unix:///disk?socket=$sock" \
  -c 'h.pwrite(b"\x5a" * (8 << 20), 0); h.flush()'

# The hostile client: 300 READs of 1 MiB, pipelined, never reading a
# reply; it keeps the connection open until killed.
ready=$TEST_DIR/hostile.ready
"$PY" - "$sock" "$ready" <<'PYEOF' &
import os, socket, sys, time
sys.path.insert(0, os.path.join(os.environ["VBK_SRC"], "tests"))
import nbdraw
s = nbdraw.connect(sys.argv[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
nbdraw.go(s, "disk")
s.setblocking(False)
sent = 0
buf = b"".join(
    nbdraw.struct.pack(">IHHQQI", nbdraw.REQ_MAGIC, 0, nbdraw.CMD_READ, i,
                       (i % 8) << 20, 1 << 20) for i in range(300))
deadline = time.time() + 5
while sent < len(buf) and time.time() < deadline:
    try:
        sent += s.send(buf[sent:])
    except BlockingIOError:
        time.sleep(0.01)
open(sys.argv[2], "w").write(str(sent))
time.sleep(3600)
PYEOF
hostile=$!
cleanup_fn "kill $hostile 2>/dev/null"
for ((i = 0; i < 200; i++)); do [ -e "$ready" ] && break; sleep 0.05; done
[ -e "$ready" ] || fail "the hostile client did not start"
sleep 1     # let the server fill the hostile client's socket

# A normal client keeps working: large and small reads and writes.
timeout 60 env PATH=/usr/bin:$PATH nbdsh -u "nbd+unix:///disk?socket=$sock" -c '
for i in range(20):
    assert h.pread(1 << 20, 0) == b"\x5a" * (1 << 20)
    h.pwrite(bytes([i]) * (2 << 20), 16 << 20)
    assert h.pread(4096, 16 << 20) == bytes([i]) * 4096
h.flush()
' || fail "a second client stalled behind one that does not read (exit $?)"

# SIGTERM ends the daemon even though one client never reads.
t0=$(now_ms)
kill -TERM "$pid"
rc=0
timeout 60 tail --pid="$pid" -f /dev/null || rc=$?
t1=$(now_ms)
[ "$rc" -eq 0 ] || fail "vbk-blockd did not exit within 60 s of SIGTERM"
wait "$pid" || fail "vbk-blockd exited $? after SIGTERM"
echo "shutdown took $((t1 - t0)) ms"
[ $((t1 - t0)) -lt 15000 ] || fail "shutdown took $((t1 - t0)) ms (bound 15 s)"
grep -q "does not read\|took no reply bytes" "$log" ||
  fail "the stalled client was not reported"
echo "blockd-stall: ok"
