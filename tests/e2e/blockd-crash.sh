#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-crash.sh - durability across kill -9 (VBK_TEST_BACKENDS): a
# client streams 4 KiB writes, each to its own block with its own
# pattern, with a FLUSH every 64 writes and FUA on every 37th, and
# records each acknowledged flush and FUA write in a log it fsyncs.
# vbk-blockd is killed with SIGKILL in the middle of the stream and
# restarted; every write acknowledged before the last acknowledged
# flush, and every acknowledged FUA write, must read back.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh

store=$(new_store)
sock=$TEST_DIR/blockd.sock
progress=$TEST_DIR/progress
export URI="nbd+unix:///disk?socket=$sock" PROGRESS=$progress

vbk --store "$store" image create disk --size 64M >/dev/null

for round in 1 2; do
  export ROUND=$round
  : >"$progress"
  start_blockd pid "$sock"
  nbdsh -u "$URI" -c - >"$TEST_DIR/writer.out" 2>&1 <<'PYEOF' &
import os, struct
BLOCKS = 16384
fd = os.open(os.environ["PROGRESS"], os.O_WRONLY | os.O_APPEND)
def note(s):
    os.write(fd, s.encode()); os.fsync(fd)
def block(i):
    return (i * 7919) % BLOCKS
def pattern(i):
    return struct.pack(">QQ", int(os.environ["ROUND"]), i + 1) * 256
for i in range(BLOCKS):
    fua = i % 37 == 36
    h.pwrite(pattern(i), block(i) * 4096, nbd.CMD_FLAG_FUA if fua else 0)
    if fua:
        note("fua %d\n" % i)
    if i % 64 == 63:
        h.flush()
        note("flushed %d\n" % (i + 1))
PYEOF
  writer=$!
  # Let the stream run, then kill the server in the middle of it.
  for ((t = 0; t < 100; t++)); do
    [ "$(grep -c flushed "$progress" || true)" -ge $((round * 20)) ] && break
    sleep 0.05
  done
  sleep 0.$((RANDOM % 3))
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  wait "$writer" 2>/dev/null || true
  grep -q flushed "$progress" || fail "no flush acknowledged before the kill ($(cat "$TEST_DIR/writer.out"))"

  start_blockd pid "$sock"
  nbdsh -u "$URI" -c - <<'PYEOF' || fail "acknowledged writes lost (round $round)"
import os, struct
BLOCKS = 16384
flushed, fuas = 0, []
for line in open(os.environ["PROGRESS"]):
    kind, n = line.split()
    if kind == "flushed":
        flushed = int(n)
    else:
        fuas.append(int(n))
bad = []
for i in list(range(flushed)) + fuas:
    got = h.pread(4096, ((i * 7919) % BLOCKS) * 4096)
    if got != struct.pack(">QQ", int(os.environ["ROUND"]), i + 1) * 256:
        bad.append(i)
assert not bad, "lost %d of %d writes, first %s" % (len(bad), flushed, bad[:5])
print("round: %d writes acknowledged before the last flush, %d FUA writes: all there" % (flushed, len(fuas)))
PYEOF
  kill -TERM "$pid"
  wait "$pid" || fail "vbk-blockd did not exit 0 on SIGTERM"
done
echo "blockd-crash: OK"
