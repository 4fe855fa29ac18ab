#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-list-status.sh - NBD_OPT_LIST and BLOCK_STATUS cost a bounded
# amount whatever the size of the images (VBK_TEST_BACKENDS): LIST
# reads names only (no image header, no object map), and one
# BLOCK_STATUS reply describes at most a bounded window (the protocol
# allows fewer extents than asked), with the map reads of untrusted
# exports one at a time.  The images: 4 TiB with 64 KiB objects, so a
# whole object map is 64 MiB; memory from /proc/PID/status.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

store=$(new_store)
export PYTHONPATH=$VBK_SRC/tests
mem () { awk -v k="$2:" '$1 == k { print int($2 / 1024) }' "/proc/$1/status"; }

vbk --store "$store" image create big1 --size 4T --object-size 64K >/dev/null
vbk --store "$store" image create big2 --size 4T --object-size 64K >/dev/null
vbk --store "$store" image create small --size 1M >/dev/null
# Write the last object of each big image, so their maps span 64 MiB.
start_blockd pid_w "$TEST_DIR/w.sock"
for img in big1 big2; do
  nbdsh -u "nbd+unix:///$img?socket=$TEST_DIR/w.sock" \
    -c 'h.pwrite(b"\x01" * 65536, h.get_size() - 65536); h.flush()'
done
stop_blockd pid_w

sock=$TEST_DIR/blockd.sock
start_blockd pid "$sock"
base=$(mem "$pid" VmHWM)
python3 - "$sock" "$pid" "$base" <<'PYEOF' || fail "NBD_OPT_LIST"
import sys, nbdraw
path, pid, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
def mem(key):
    for line in open("/proc/%s/status" % pid):
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
for _ in range(4):
    s = nbdraw.connect(path)
    names = nbdraw.list_exports(s)
    assert sorted(names) == ["big1", "big2", "small"], names
    s.close()
grown = mem("VmHWM") - base
print("LIST x4 over two 4 TiB images: peak grew %d MiB" % grown)
assert grown < 16, "LIST cost %d MiB" % grown
PYEOF

python3 - "$sock" "$pid" <<'PYEOF' || fail "BLOCK_STATUS"
import os, struct, sys, threading, nbdraw
path, pid = sys.argv[1], sys.argv[2]
GiB = 1 << 30
def mem(key):
    for line in open("/proc/%s/status" % pid):
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
conns = []
for i in range(4):
    s = nbdraw.connect(path)
    nbdraw.go(s, "big%d" % (i % 2 + 1), structured=True,
              meta="base:allocation")
    conns.append(s)
def status(s, off, count, handle):
    nbdraw.request(s, nbdraw.CMD_BLOCK_STATUS, off, count, handle)
    flags, t, h, p = nbdraw.structured(s)
    assert t == nbdraw.REPLY_TYPE_BLOCK_STATUS and h == handle, (t, p)
    d = [struct.unpack(">II", p[i:i + 8]) for i in range(4, len(p), 8)]
    return sum(l for l, f in d), d
# A bounded window: asking for almost 4 GiB gets at most 1 GiB back.
covered, d = status(conns[0], 0, 0xFFFFF000, 1)
assert 0 < covered <= GiB, "one reply covered %d bytes" % covered
# The end of the image: data where it was written.
covered, d = status(conns[0], (4 << 40) - (1 << 20), 1 << 20, 2)
assert covered == 1 << 20 and d[-1] == (65536, 0), d
# Many clients at once: the untrusted maps are read one at a time.
base = mem("VmRSS")
errors = []
def worker(s, k):
    try:
        for j in range(3):
            status(s, (j + 1) * GiB, GiB, 10 + j)
    except Exception as e:
        errors.append(e)
ts = [threading.Thread(target=worker, args=(s, k)) for k, s in enumerate(conns)]
for t in ts:
    t.start()
for t in ts:
    t.join()
assert not errors, errors
grown = mem("VmHWM") - base
print("BLOCK_STATUS from 4 clients: peak %d MiB over the open exports" % grown)
# One 64 MiB map read at a time (the rados backend holds it twice
# while it copies); four at once would be 256 MiB or more.
bound = 200 if os.environ["VBK_TEST_STORE_KIND"] == "rados" else 120
assert grown < bound, "concurrent BLOCK_STATUS cost %d MiB" % grown
PYEOF
stop_blockd pid
echo "blockd-list-status: ok"
