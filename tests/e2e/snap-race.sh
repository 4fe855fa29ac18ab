#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snap-race.sh - operator commands racing each other under write load,
# once per store backend (VBK_TEST_BACKENDS).  vbk-blockd holds the
# lease of "disk" and serves one NBD client that writes a known sequence
# (snap-race.py drive), shrinking and growing the image with vbk image
# resize between writes; meanwhile one process takes snapshots in a
# loop and another removes the newest one whenever it is an odd one, so
# removals race creations (and resizes) all along.  All of these go
# through the lease holder, one at a time.  Afterwards (snap-race.py
# check) every snapshot left and the live image hold exactly a prefix of
# the writes with a size and tail allowed there, and vbk diff between
# every pair covers every block that differs.
#
# Without the serialization (removal, resize and diff straight on the
# store, as before) this fails: a removal of the newest snapshot that
# races a creation loses the live interval's merged changes (a diff
# misses blocks), and a shrink that loaded its snapshot context before a
# snapshot cut the tail under it (that snapshot loses its tail).
#
# SNAPSHOTS (default 24) changes the run.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

py=$(python_with_nbd)
store=$(new_store)
sock=$TEST_DIR/A.sock
n=${SNAPSHOTS:-24}
race="$VBK_SRC/tests/e2e/snap-race.py"

vbk --store "$store" image create disk --size 32M --object-size 1M
start_blockd pid_A "$sock" --host-id hostA

"$py" "$race" drive --uri "nbd+unix:///disk?socket=$sock" \
  --vbk "$VBK_BIN/vbk" --store "$store" --log "$TEST_DIR/drive.json" \
  --stop "$TEST_DIR/stop" --ready "$TEST_DIR/ready" \
  >"$TEST_DIR/drive.out" 2>&1 &
drive=$!
cleanup_fn "kill $drive 2>/dev/null"
for ((i = 0; i < 600; i++)); do [ -e "$TEST_DIR/ready" ] && break; sleep 0.05; done
[ -e "$TEST_DIR/ready" ] || fail "the writer did not start: $(cat "$TEST_DIR/drive.out")"

# The remover: the newest snapshot goes whenever it is an odd one.
(
  while [ ! -e "$TEST_DIR/stop" ]; do
    newest=$(vbk --store "$store" snap ls disk --json |
               "$py" -c 'import json,sys; v=json.load(sys.stdin); print(v[-1]["name"] if v else "")')
    case "$newest" in
      *[13579])
        vbk --store "$store" snap rm "disk@$newest" 2>>"$TEST_DIR/rm.err" ||
          { echo "snap rm disk@$newest failed" >>"$TEST_DIR/rm.err"; exit 1; }
        echo "$newest" >>"$TEST_DIR/removed" ;;
      *) sleep 0.01 ;;
    esac
  done
) &
remover=$!
cleanup_fn "kill $remover 2>/dev/null"

for ((k = 1; k <= n; k++)); do
  vbk --store "$store" snap create "disk@s$k" >/dev/null 2>"$TEST_DIR/create.err" ||
    { touch "$TEST_DIR/stop"; fail "snap create disk@s$k: $(cat "$TEST_DIR/create.err")"; }
done
touch "$TEST_DIR/stop"
wait "$remover" || fail "the remover failed: $(cat "$TEST_DIR/rm.err")"
wait "$drive" || fail "the writer failed: $(cat "$TEST_DIR/drive.out")"
cat "$TEST_DIR/drive.out"
removed=$(wc -l <"$TEST_DIR/removed" 2>/dev/null || echo 0)
echo "snapshots: $n taken, $removed removed while others were taken"
[ "$removed" -ge 1 ] || fail "no removal raced a creation"

"$py" "$race" check --vbk "$VBK_BIN/vbk" --store "$store" \
  --log "$TEST_DIR/drive.json" --dir "$TEST_DIR" ||
  fail "snapshots or diffs are wrong after the race"

# Every command went through the holder: nobody took the lease from it.
vbk --store "$store" lease status disk --json | "$py" -c '
import json, sys
d = json.load(sys.stdin)
assert d["handoffs"] == 0, d' ||
  fail "the lease moved during the run: $(vbk --store "$store" lease status disk)"
echo "snap-race: OK"
