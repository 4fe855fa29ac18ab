#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-conn-churn.sh - a daemon that serves many short connections
# keeps no resources per connection once it is gone (VBK_TEST_BACKENDS).
# Each round: a client connects, writes (the export opens, takes the
# lease, closes and lets it go again when the client leaves), another
# asks for an export that does not exist, a third lists the exports.
# After a warm-up batch, two equal batches of rounds must leave the
# daemon's open files where they were (up to a few that come and go with
# the daemon's own threads; a leak was two per round) and its resident
# memory about flat:
# the growth over the second batch is compared with a bound far above
# the noise (a few hundred KiB) and far below a leak of a file or a
# buffer per connection.  Descriptors and memory come from /proc/PID.
# In a sanitizer build the memory check is left out: ASan keeps freed
# memory in its quarantine (256 MiB), so RSS grows by design there.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

store=$(new_store)
sock=$TEST_DIR/blockd.sock
export PYTHONPATH=$VBK_SRC/tests
ROUNDS=${VBK_CHURN_ROUNDS:-200}

vbk --store "$store" image create disk --size 16M >/dev/null
start_blockd pid "$sock"
check_rss=1
if grep -q __asan_init "$VBK_BIN/vbk-blockd"; then
  check_rss=0
  echo "vbk-blockd is built with ASan: RSS not checked, open files are"
fi

python3 - "$sock" "$pid" "$ROUNDS" "$check_rss" <<'PYEOF' || fail "resources held per connection"
import os, struct, sys, time, nbdraw
path, pid, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
check_rss = sys.argv[4] == "1"

def fds():
    return len(os.listdir("/proc/%s/fd" % pid))

def rss_kib():
    for line in open("/proc/%s/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def round_(i):
    s = nbdraw.connect(path)
    nbdraw.go(s, "disk")
    nbdraw.request(s, nbdraw.CMD_WRITE, (i % 64) * 4096, 4096, 1,
                   bytes([i % 251]) * 4096)
    err, h, _ = nbdraw.simple(s)
    assert err == 0 and h == 1, "write: error %d" % err
    nbdraw.request(s, nbdraw.CMD_DISC, 0, 0, 2)
    assert nbdraw.closed(s), "no hang-up after NBD_CMD_DISC"
    s.close()
    s = nbdraw.connect(path)
    name = b"nosuch%d" % (i % 5)
    nbdraw.option(s, nbdraw.OPT_GO, struct.pack(">I", len(name)) + name
                  + struct.pack(">H", 0))
    opt, rtype, _ = nbdraw.reply(s)
    assert rtype & 0x80000000, "GO on a missing export: reply type %#x" % rtype
    s.close()
    s = nbdraw.connect(path)
    assert "disk" in nbdraw.list_exports(s)
    s.close()

def batch():
    for i in range(rounds):
        round_(i)
    # The last export closes after its client left (flush, lease release,
    # store handle): the fewest files seen over two seconds.
    low = fds()
    for _ in range(40):
        time.sleep(0.05)
        low = min(low, fds())
    return low, rss_kib()

f0, m0 = batch()          # warm-up: caches, thread stacks, arenas
f1, m1 = batch()
f2, m2 = batch()
print("after %d rounds each: open files %d, %d, %d; RSS %d, %d, %d KiB"
      % (rounds, f0, f1, f2, m0, m1, m2))
assert f2 - f1 <= 8 and f1 - f0 <= 8, \
    "open files grow with connections: %d, %d, %d" % (f0, f1, f2)
assert not check_rss or m2 - m1 < 4096, "RSS grew by %d KiB over %d rounds" % (m2 - m1, rounds)
PYEOF
stop_blockd pid
echo "blockd-conn-churn: ok"
