#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snap-cbt-crash.sh - changed-block tracking survives a crash, a takeover
# and a hand-off (VBK_TEST_BACKENDS).  After a snapshot, a client streams
# writes to scattered objects through vbk-blockd on "host A" and logs
# every acknowledged one; A is killed with SIGKILL mid-stream.  "Host B"
# takes over the lease (after it runs out) and writes more; then the
# writer moves back to a restarted A (a hand-off).  `vbk diff --from`
# must list every object any acknowledged write touched: it may list
# more (over-report after a crash), never fewer.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
requires python3

store=$(new_store)
OBJ=65536
acked=$TEST_DIR/acked
: >"$acked"

# stream SOCKET FIRST COUNT: writes 4 KiB to COUNT scattered objects,
# logging the offset of each acknowledged write.
stream ()
{
  SOCK=$1 FIRST=$2 COUNT=$3 ACKED=$acked nbdsh -c - <<'PYEOF'
import os
h.connect_uri("nbd+unix:///disk?socket=" + os.environ["SOCK"])
fd = os.open(os.environ["ACKED"], os.O_WRONLY | os.O_APPEND)
first, count = int(os.environ["FIRST"]), int(os.environ["COUNT"])
for i in range(first, first + count):
    obj = (i * 37) % 1024
    off = obj * 65536 + (i % 16) * 4096
    h.pwrite(bytes([i % 251 + 1]) * 4096, off)
    os.write(fd, b"%d\n" % off)
PYEOF
}

check_diff ()     # WHAT
{
  vbk --store "$store" diff disk --from base --json >"$TEST_DIR/diff.json"
  python3 - "$TEST_DIR/diff.json" "$acked" "$1" <<'PYEOF' || fail "diff under-reports ($3)"
import json, sys
d = json.load(open(sys.argv[1]))
ext = [(e["offset"], e["offset"] + e["length"]) for e in d["extents"]]
offs = [int(l) for l in open(sys.argv[2]) if l.strip()]
missing = [o for o in offs if not any(a <= o and o + 4096 <= b for a, b in ext)]
changed = sum(b - a for a, b in ext)
objs = len({o // 65536 for o in offs})
print("%s: %d acknowledged writes in %d objects; diff lists %d KiB (%d objects' worth)"
      % (sys.argv[3], len(offs), objs, changed // 1024, changed // 65536))
if missing:
    print("not in the diff:", missing[:10])
    sys.exit(1)
PYEOF
}

vbk --store "$store" image create disk --size 64M --object-size 64K >/dev/null
start_blockd pid_a "$TEST_DIR/a.sock" --host-id host-a --lease-duration 3
stream "$TEST_DIR/a.sock" 0 40
vbk --store "$store" snap create disk@base >/dev/null

# 1. kill -9 of the holder in the middle of a write stream.
stream "$TEST_DIR/a.sock" 1000 100000 &
writer=$!
# Until 300 writes are acknowledged (at most 120 s: on a loaded machine
# 10 s did not always do), or the writer ended.
for ((t = 0; t < 2400; t++)); do
  [ "$(wc -l <"$acked")" -ge 300 ] && break
  kill -0 "$writer" 2>/dev/null || break
  sleep 0.05
done
kill -9 "$pid_a"
wait "$writer" 2>/dev/null || true
[ "$(wc -l <"$acked")" -ge 300 ] || fail "the stream did not get going"
check_diff "after kill -9"

# 2. Takeover: B writes once A's lease has run out.
start_blockd pid_b "$TEST_DIR/b.sock" --host-id host-b --lease-duration 3
stream "$TEST_DIR/b.sock" 200000 200
check_diff "after takeover by B"

# 3. Hand-off back to a restarted A.
start_blockd pid_a "$TEST_DIR/a.sock" --host-id host-a --lease-duration 3
stream "$TEST_DIR/a.sock" 300000 200
check_diff "after hand-off to A"
# Three acquisitions: A, B (takeover), A again.
epoch=$(vbk --store "$store" lease status disk --json |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["epoch"])')
[ "$epoch" -ge 3 ] || fail "expected 3 lease acquisitions, epoch is $epoch"
echo "snap-cbt-crash: ok"
