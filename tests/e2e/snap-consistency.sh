#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snap-consistency.sh - snapshots taken by vbk-blockd during a continuous
# stream of writes are crash-consistent, once per store backend
# (VBK_TEST_BACKENDS).  snap-consistency.py does the work (4 writers over
# NBD, vbk snap create mid-stream, each snapshot checked against the
# writers' logs; see there); this script starts the daemon, checks that
# the holder took every snapshot, and prints the I/O pause p50/p99.
#
# SNAPSHOTS (default 20) and WRITERS (default 4) change the run.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

py=$(python_with_nbd)

store=$(new_store)
sock=$TEST_DIR/blockd.sock
log=$TEST_DIR/blockd.log
n=${SNAPSHOTS:-20}
writers=${WRITERS:-4}

# Each writer's region: 4 MiB over 4 objects of 1 MiB.
vbk --store "$store" image create disk --size $((writers * 4))M --object-size 1M
start_blockd pid "$sock" --host-id host-a

"$py" "$VBK_SRC/tests/e2e/snap-consistency.py" \
  --uri "nbd+unix:///disk?socket=$sock" --socket "$sock" \
  --vbk "$VBK_BIN/vbk" --store "$store" --image disk \
  --writers "$writers" --blocks 1024 --snapshots "$n" \
  --json "$TEST_DIR/result.json" ||
  fail "snapshots are not consistent (blockd log: $(tail -5 "$log"))"

# The holder took them: one log line each, and the lease never moved
# (epoch 1: vbk never took it for itself).  blockd let it go when the
# writers disconnected and the export closed.
taken=$(grep -c "snapshot c[0-9]*: taken" "$log" || true)
[ "$taken" -eq "$n" ] || fail "blockd logged $taken of $n snapshots"
vbk --store "$store" lease status disk --json | "$py" -c '
import json, sys
d = json.load(sys.stdin)
assert d["epoch"] == 1 and d["handoffs"] == 0, d' ||
  fail "the lease moved during the run: $(vbk --store "$store" lease status disk)"
[ "$(vbk --store "$store" snap ls disk --json | "$py" -c 'import json,sys; print(len(json.load(sys.stdin)))')" -eq "$n" ] ||
  fail "snap ls does not list $n snapshots"

kill -TERM "$pid"
wait "$pid" || fail "vbk-blockd did not stop cleanly"
echo "snap-consistency: OK"
