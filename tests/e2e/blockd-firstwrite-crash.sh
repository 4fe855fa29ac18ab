#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-firstwrite-crash.sh - concurrent first writes survive kill -9
# (VBK_TEST_BACKENDS).  Four connections keep 32 writes each in flight
# to a new thin image with small objects, each connection on blocks of
# its own in a scattered order, so most writes are the first to their
# object: the change-log records and map bytes of many objects are
# committed concurrently, by several connections' readers at once (group
# commit: objmap.c; on RADOS through the commit queue, commit.c).  Each
# writer logs every acknowledged write.  vbk-blockd is killed with
# SIGKILL mid-stream and restarted:
# every acknowledged write must read back, the map must report its
# block allocated (NBD block status), and `vbk diff --from` the snapshot
# taken before the stream must list it.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3

store=$(new_store)
sock=$TEST_DIR/blockd.sock
uri="nbd+unix:///disk?socket=$sock"
py_nbd=$(python_with_nbd)
NCONN=4
BLOCKS=16384                    # 64 MiB of 4 KiB blocks: 1024 objects of 64 KiB

vbk --store "$store" image create disk --size 64M --object-size 64K >/dev/null
vbk --store "$store" snap create disk@base >/dev/null
start_blockd pid "$sock"

# writer K: blocks b with b % NCONN == K, shuffled, QD 32; logs the
# offset of each acknowledged write to acked.K.
for ((k = 0; k < NCONN; k++)); do
  PATH=/usr/bin:$PATH "$py_nbd" - "$uri" "$k" "$NCONN" "$BLOCKS" \
    "$TEST_DIR/acked.$k" >"$TEST_DIR/writer.$k.out" 2>&1 <<'PY' &
import nbd, os, random, struct, sys
uri, k, n, blocks, log = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]
h = nbd.NBD()
h.connect_uri(uri)
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
mine = [b for b in range(blocks) if b % n == k]
random.Random(k).shuffle(mine)
def done(off):
    def cb(err):
        if err.value == 0:
            os.write(fd, b"%d\n" % off)
        return 1
    return cb
for b in mine:
    while h.aio_in_flight() >= 32:
        h.poll(-1)
    h.aio_pwrite(struct.pack(">QQ", b, 0xf1f5) * 256, b * 4096,
                 completion=done(b * 4096))
while h.aio_in_flight() > 0:
    h.poll(-1)
h.shutdown()
PY
  writers+=($!)
done

acked () { cat "$TEST_DIR"/acked.* 2>/dev/null | wc -l; }
for ((t = 0; t < 600; t++)); do
  [ "$(acked)" -ge 1500 ] && break
  sleep 0.05
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
for w in "${writers[@]}"; do wait "$w" 2>/dev/null || true; done
n=$(acked)
[ "$n" -ge 1500 ] || fail "the writers did not get going ($n acknowledged)"
[ "$n" -lt "$BLOCKS" ] || fail "the stream ended before the kill: no crash mid-stream"
cat "$TEST_DIR"/acked.* >"$TEST_DIR/acked"

start_blockd pid "$sock"
PATH=/usr/bin:$PATH "$py_nbd" - "$uri" "$TEST_DIR/acked" <<'PY' || fail "acknowledged writes lost after kill -9"
import nbd, struct, sys
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(sys.argv[1])
offs = sorted(int(l) for l in open(sys.argv[2]) if l.strip())
size = h.get_size()
hole = bytearray(size // 4096)   # per 4 KiB block: reported as a hole
def ext(meta, off, entries, err):
    if meta == nbd.CONTEXT_BASE_ALLOCATION:
        pos = off
        for i in range(0, len(entries), 2):
            if entries[i + 1] & nbd.STATE_HOLE:
                for b in range(pos // 4096, (pos + entries[i]) // 4096):
                    hole[b] = 1
            pos += entries[i]
        cur[0] = pos
    return 0
cur = [0]
while cur[0] < size:
    start = cur[0]
    h.block_status(size - start, start, ext)
    assert cur[0] > start
bad_data = [o for o in offs
            if h.pread(4096, o) != struct.pack(">QQ", o // 4096, 0xf1f5) * 256]
bad_map = [o for o in offs if hole[o // 4096]]
print("%d acknowledged writes in %d objects: %d lost, %d reported as holes"
      % (len(offs), len({o >> 16 for o in offs}), len(bad_data), len(bad_map)))
assert not bad_data, "lost: %s" % bad_data[:5]
assert not bad_map, "holes in the map: %s" % bad_map[:5]
h.shutdown()
PY

vbk --store "$store" diff disk --from base --json >"$TEST_DIR/diff.json"
python3 - "$TEST_DIR/diff.json" "$TEST_DIR/acked" <<'PY' || fail "diff under-reports"
import json, sys
d = json.load(open(sys.argv[1]))
ext = sorted((e["offset"], e["offset"] + e["length"]) for e in d["extents"])
offs = [int(l) for l in open(sys.argv[2]) if l.strip()]
import bisect
starts = [a for a, _ in ext]
def covered(o):
    i = bisect.bisect_right(starts, o) - 1
    return i >= 0 and ext[i][0] <= o and o + 4096 <= ext[i][1]
missing = [o for o in offs if not covered(o)]
print("diff lists %d KiB; %d acknowledged writes not in it"
      % (sum(b - a for a, b in ext) // 1024, len(missing)))
sys.exit(1 if missing else 0)
PY
stop_blockd pid
echo "blockd-firstwrite-crash: OK"
