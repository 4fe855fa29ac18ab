#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-concurrent.sh - two hosts open one image; B's client writes while
# A's client is in the middle of a stream (VBK_TEST_BACKENDS).
#
# A's client writes 512 blocks of 64 KiB one after another, each with its
# own pattern, and logs when each request started and was acknowledged
# (CLOCK_MONOTONIC, shared by the processes of one machine).  Once A is a
# few blocks into the stream, B's client writes 8 MiB over a range that
# A has partly written and has partly still ahead, which takes the lease
# from A; A's following writes take it back.  Neither client may see an
# error (hand-offs make writes wait, never fail).  Then, through both
# daemons, every block must hold its last writer's data: B's where A's
# write was acknowledged before B's request, A's where A's request came
# after B's acknowledgement, and one of the two, whole, in between.
# Finally B writes once more: the image is B's view through A as well.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
requires qemu-img

store=$(new_store)


vbk --store "$store" image create disk --size 64M >/dev/null
start_host A
start_host B

export URI_A=$(host_uri A) URI_B=$(host_uri B) ALOG=$TEST_DIR/a.log BLOG=$TEST_DIR/b.log \
  BSTART=$TEST_DIR/b.start
: >"$ALOG"

# ---- A's stream ---------------------------------------------------------------
nbdsh -u "$URI_A" -c - >"$TEST_DIR/a.out" 2>&1 <<'PY' &
import os, struct, time
fd = os.open(os.environ["ALOG"], os.O_WRONLY | os.O_APPEND)
def wait_for(path, what):
    for _ in range(2400):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise SystemExit("A: gave up waiting for " + what)
for i in range(512):
    # The interleaving the check below needs, whatever the machine's
    # load: blocks 128..149 written before B starts (B's data wins),
    # 150..199 racing B's request, and 200.. only after B's write was
    # acknowledged (A's data wins).
    if i == 150:
        wait_for(os.environ["BSTART"], "B's start")
    if i == 200:
        wait_for(os.environ["BLOG"], "B's acknowledgement")
    data = struct.pack(">4sQ", b"AAAA", i + 1) * 5461 + b"\0" * 4
    t0 = time.monotonic_ns()
    h.pwrite(data, i * 65536)
    t1 = time.monotonic_ns()
    os.write(fd, b"%d %d %d\n" % (i, t0, t1))
    # Slow enough that B's write lands in the middle of the stream.
    if i % 16 == 15:
        time.sleep(0.02)
print("A: 512 writes acknowledged")
PY
writer=$!

# Wait until A is 150 blocks in (it waits there for B), then B writes
# blocks 128..255 (8M-16M).
for ((t = 0; t < 600; t++)); do
  [ "$(wc -l <"$ALOG")" -ge 150 ] && break
  sleep 0.05
done
[ "$(wc -l <"$ALOG")" -ge 150 ] || fail "A's stream did not start: $(cat "$TEST_DIR/a.out"); $(host_logs)"
nbdsh -u "$URI_B" -c - >"$TEST_DIR/b.out" 2>&1 <<'PY' || fail "B's write failed: $(cat "$TEST_DIR/b.out"); $(host_logs)"
import os, time
t0 = time.monotonic_ns()
open(os.environ["BSTART"], "w").close()
h.pwrite(b"B" * (8 << 20), 8 << 20)
t1 = time.monotonic_ns()
with open(os.environ["BLOG"] + ".tmp", "w") as f:
    f.write("%d %d\n" % (t0, t1))
os.rename(os.environ["BLOG"] + ".tmp", os.environ["BLOG"])
print("B: write of 8 MiB in %.1f ms, A at block %d" % ((t1 - t0) / 1e6, sum(1 for _ in open(os.environ["ALOG"]))))
PY
cat "$TEST_DIR/b.out"
wait "$writer" || fail "A's stream failed: $(cat "$TEST_DIR/a.out"); $(host_logs)"
cat "$TEST_DIR/a.out"
[ "$(wc -l <"$ALOG")" -eq 512 ] || fail "A acknowledged $(wc -l <"$ALOG") of 512 writes"

# ---- Every block holds its last writer's data, through both daemons ---------
check='
import os, struct
ab = {}
for line in open(os.environ["ALOG"]):
    i, t0, t1 = map(int, line.split())
    ab[i] = (t0, t1)
b0, b1 = map(int, open(os.environ["BLOG"]).read().split())
counts = {"A": 0, "B": 0, "either": 0}
for i in range(512):
    got = h.pread(65536, i * 65536)
    a = struct.pack(">4sQ", b"AAAA", i + 1) * 5461 + b"\0" * 4
    b = b"B" * 65536
    if not (128 <= i < 256):
        assert got == a, "block %d: not A\x27s data" % i
        continue
    t0, t1 = ab[i]
    if t1 < b0:
        want = [b]; counts["B"] += 1
    elif t0 > b1:
        want = [a]; counts["A"] += 1
    else:
        want = [a, b]; counts["either"] += 1
    assert got in want, "block %d: lost the last acknowledged write (A %d-%d, B %d-%d)" % (i, t0, t1, b0, b1)
print("blocks in B\x27s range: %d B\x27s, %d A\x27s (written after), %d concurrent" % (counts["B"], counts["A"], counts["either"]))
assert counts["B"] > 0 and counts["A"] > 0, counts
'
nbdsh -u "$URI_A" -c "$check" || fail "through A: $(host_logs)"
nbdsh -u "$URI_B" -c "$check" || fail "through B: $(host_logs)"
qemu-img compare -f raw -F raw "$URI_A" "$URI_B" >/dev/null || fail "A and B differ"

# ---- B writes last: its view everywhere ---------------------------------------
nbdsh -u "$URI_B" -c 'h.pwrite(b"C" * (1 << 20), 0)' || fail "B's last write: $(host_logs)"
nbdsh -u "$URI_A" -c 'assert h.pread(1 << 20, 0) == b"C" * (1 << 20)' ||
  fail "A does not see B's last write"
qemu-img compare -f raw -F raw "$URI_A" "$URI_B" >/dev/null || fail "A and B differ at the end"
vbk --store "$store" lease status disk
echo "lease-concurrent: OK"
