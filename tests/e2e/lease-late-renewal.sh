#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-late-renewal.sh - a lease renewal that the store did but answered
# only after the lease it gives had ended must not fail a client write
# (VBK_TEST_BACKENDS).
#
# What happens in an OSD outage longer than the lease: the renewal sent
# just before it reached the OSDs and was done, but its answer was lost;
# librados sends it again once the OSDs are back, and the OSD answers
# with the first result, success, long after the lease ran out.  Here
# the fault store makes that answer late on purpose (hold=FILE: the
# lock request is made, its answer waits while FILE exists).  A writer
# (tests/tools/pattern-io.py) keeps 8 verified writes in flight; its
# writes stop at the lease's write-stop and wait, and when the answer
# comes the lease is taken again (the epoch is still ours) and the
# stream goes on: no failed write, and everything reads back.  Before,
# the late success was taken as a renewal that ended in the past, the
# next tick expired the lease, and the waiting writes failed with EIO.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

PY=$(python_with_nbd)
blocks=1024
hold=$TEST_DIR/hold
inner=$(new_store)
store="fault:op=lock,hold=$hold,trigger=$hold@$inner"

stream_start "$inner"

# The next lock request (a renewal: the writer holds the lease) is made
# and its answer held back for twice the lease.
touch "$hold"
wait_held "$hold" "no lock request was held in 10 s"
sleep 4
read -r a f q < <(progress)
[ "$f" -eq 0 ] || fail "the client saw $f failed writes while the renewal hung"
kill -0 "$writer" 2>/dev/null || fail "the writer ended: $(cat "$TEST_DIR/writer.out")"
[ "$q" -gt 0 ] || fail "no write waits while the renewal hangs (progress: $a $f $q)"
echo "renewal held 4 s: the stream stands at $a writes, $q in flight"
rm -f "$hold"
more_acked "$a" 30
read -r a f q < <(progress)
[ "$f" -eq 0 ] || fail "the client saw $f failed writes after the late renewal"
grep -q "answered only after the lease it gives had ended" "$TEST_DIR/blockd.log" ||
  fail "the late renewal is not logged: $(tail -5 "$TEST_DIR/blockd.log")"
grep -q "taken again after the lapse" "$TEST_DIR/blockd.log" ||
  fail "the lease was not taken again: $(tail -5 "$TEST_DIR/blockd.log")"

pattern_end "$uri" "$TEST_DIR/record.json" $blocks
stop_blockd pid
echo "lease-late-renewal: ok"
