#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-limits.sh - vbk-blockd bounds what unauthenticated clients can
# take: connections per client (uid on the Unix socket) and in all,
# the time to finish the handshake (a silent client, a slow one, one
# that negotiates forever without NBD_OPT_GO), and at the descriptor
# limit the accept loop backs off instead of spinning and flooding the
# log.  Raw-socket clients (tests/nbdraw.py).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdinfo
store=$(new_store)
vbk --store "$store" image create disk --size 16M >/dev/null
export PYTHONPATH=$VBK_SRC/tests

# ---- Connections per client and in all -------------------------------------
sock=$TEST_DIR/a.sock
start_blockd pid_a "$sock" --max-connections-per-client 4
python3 - "$sock" <<'PYEOF' || fail "per-client connection limit"
import sys, nbdraw
path = sys.argv[1]
held = [nbdraw.connect(path) for _ in range(4)]
for s in held:
    assert nbdraw.go(s, "disk") == 16 << 20
extra = nbdraw.connect(path, greet=False)
assert nbdraw.closed(extra), "a 5th connection of one uid was served"
held.pop().close()
import time
for _ in range(100):            # the server notices the close
    try:
        s = nbdraw.connect(path)
        break
    except (EOFError, ConnectionResetError):
        time.sleep(0.05)
else:
    raise SystemExit("no connection after one was closed")
assert nbdraw.go(s, "disk") == 16 << 20
PYEOF
grep -q "refused: too many connections" "$TEST_DIR/a.log" ||
  fail "refused connection not logged"
stop_blockd pid_a

sock=$TEST_DIR/b.sock
start_blockd pid_b "$sock" --max-connections 3 --max-connections-per-client 100
python3 - "$sock" <<'PYEOF' || fail "global connection limit"
import sys, nbdraw
path = sys.argv[1]
held = [nbdraw.connect(path) for _ in range(3)]
extra = nbdraw.connect(path, greet=False)
assert nbdraw.closed(extra), "a 4th connection was served"
PYEOF
stop_blockd pid_b

# ---- Handshake timeout --------------------------------------------------------
sock=$TEST_DIR/c.sock
start_blockd pid_c "$sock" --handshake-timeout 1
python3 - "$sock" <<'PYEOF' || fail "handshake timeout"
import struct, sys, time, nbdraw
path = sys.argv[1]
# Silent after connecting: not even the client flags.
silent = nbdraw.connect(path, greet=False)
# Half an option, then nothing.
half = nbdraw.connect(path)
half.sendall(struct.pack(">QI", nbdraw.IHAVEOPT, nbdraw.OPT_LIST))
# Busy negotiating, never GO: LIST every 0.2 s.
busy = nbdraw.connect(path)
# One that goes in time stays.
good = nbdraw.connect(path)
nbdraw.go(good, "disk")
t0 = time.time()
busy_closed = False
while time.time() - t0 < 10:
    try:
        nbdraw.list_exports(busy)
    except (EOFError, ConnectionResetError, BrokenPipeError):
        busy_closed = True
        break
    time.sleep(0.2)
assert busy_closed, "a client negotiating without GO was kept for 10 s"
assert nbdraw.closed(silent, 10), "silent client not dropped"
assert nbdraw.closed(half, 10), "half-option client not dropped"
time.sleep(1)
nbdraw.request(good, nbdraw.CMD_READ, 0, 4096, 1)
err, h, data = nbdraw.simple(good, 4096)
assert err == 0 and h == 1 and len(data) == 4096, "transmission was timed out"
PYEOF
grep -q "handshake not finished in time" "$TEST_DIR/c.log" ||
  fail "handshake timeout not logged"
stop_blockd pid_c

# ---- Out of descriptors: back off, log a little ------------------------------
sock=$TEST_DIR/d.sock
log=$TEST_DIR/d.log
( ulimit -n 48; exec "$VBK_BIN/vbk-blockd" --store "$store" --socket "$sock" \
    --max-connections 1000 --max-connections-per-client 1000 \
    --handshake-timeout 60 ) 2>>"$log" &
pid_d=$!
cleanup_fn "kill -9 $pid_d 2>/dev/null"
wait_for_socket "$sock"
python3 - "$sock" "$pid_d" "$log" <<'PYEOF' || fail "descriptor exhaustion"
import os, socket, sys, time, nbdraw
path, pid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conns = []
for _ in range(80):             # past the daemon's 48 descriptors
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)             # the backlog takes them
    conns.append(s)
time.sleep(1)
def cpu():
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
size0 = os.path.getsize(log)
c0, t0 = cpu(), time.time()
time.sleep(3)
c1, t1 = cpu(), time.time()
grown = os.path.getsize(log) - size0
print("daemon CPU %.2f s in %.1f s; log grew %d bytes" % (c1 - c0, t1 - t0, grown))
assert c1 - c0 < 1.0, "the accept loop spins at the descriptor limit"
assert grown < 4096, "the log floods at the descriptor limit"
for s in conns:
    s.close()
PYEOF
for ((i = 0; i < 100; i++)); do
  nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null 2>&1 && break
  sleep 0.1
done
nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null ||
  fail "no service once descriptors were free again"
kill -TERM "$pid_d"
wait "$pid_d" || fail "vbk-blockd exited $? after SIGTERM"
echo "blockd-limits: ok"
