#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-watch-outage.sh - a lease holder whose watch on the header breaks,
# and whose new watch cannot be made for several lease durations, keeps
# its lease and its writes (VBK_TEST_BACKENDS).
#
# In an outage long enough for the OSDs to drop a watch, RADOS reports it
# broken (-ENOTCONN, as it does for a fenced client), and a new watch
# request waits for the store like any other.  The fault store plays
# that for the watch alone (watchdrop=FILE: while FILE exists, the watch
# is dropped and store_watch waits), while the lock renewals go on.  A
# writer (tests/tools/pattern-io.py) keeps 8 verified writes in flight
# through vbk-blockd with 2 s leases; the watch stays broken for 6 s.
# Writes must go on all along (renewals do not wait for the watch), the
# lease must stay with the same epoch, and once the watch can be made
# again the holder must answer a snapshot request through it.  Before,
# the broken watch was taken for a fence (the lease lost, every write
# failed), and a watch re-created on the lease's own thread held back
# the renewals until its request returned.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

PY=$(python_with_nbd)
blocks=1024
drop=$TEST_DIR/watchdrop
inner=$(new_store)
store="fault:watchdrop=$drop@$inner"

epoch ()
{
  vbk --store "$inner" lease status disk --json |
    python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["epoch"] if v["held"] else "none")'
}

stream_start "$inner"
e0=$(epoch)
[ "$e0" != none ] || fail "nobody holds the lease while the writer writes"

# The watch breaks; the holder's new watch waits while $drop exists.
touch "$drop"
wait_held "$drop" "the holder did not try to make a new watch in 10 s"
# Three lease durations: without renewals the writes would stop at the
# write-stop and fail at the lease's end.
a0=$(acked)
sleep 6
read -r a f q < <(progress)
kill -0 "$writer" 2>/dev/null || fail "the writer ended: $(cat "$TEST_DIR/writer.out")"
[ "$f" -eq 0 ] || fail "the client saw $f failed writes while the watch was broken"
[ -e "$drop.held" ] || fail "the new watch was made while the store held it back"
e1=$(epoch)
[ "$e1" = "$e0" ] || fail "the lease moved while the watch was broken (epoch $e0 -> $e1)"
! grep -E "lost|lapse|ran out" "$TEST_DIR/blockd.log" ||
  fail "the lease suffered from the broken watch"
more_acked "$a" 10
echo "watch broken 6 s: $((a - a0)) writes meanwhile, lease epoch $e1"

# The store answers again: the new watch is made, and the holder answers
# requests through it (the snapshot is taken by the holder, not by a
# takeover, which would have to wait out a lease that keeps being renewed).
rm -f "$drop"
for ((i = 0; i < 100; i++)); do
  [ -e "$drop.held" ] || break
  sleep 0.1
done
[ -e "$drop.held" ] && fail "the held watch request did not return"
for ((i = 0; i < 100; i++)); do
  grep -q "watch re-created" "$TEST_DIR/blockd.log" && break
  sleep 0.1
done
grep -q "watch re-created" "$TEST_DIR/blockd.log" ||
  fail "no new watch: $(tail -5 "$TEST_DIR/blockd.log")"
vbk --store "$inner" snap create disk@after >/dev/null ||
  fail "snapshot through the holder failed: $(tail -5 "$TEST_DIR/blockd.log")"
grep -q "snapshot after: writes held" "$TEST_DIR/blockd.log" ||
  fail "the holder did not take the snapshot: $(tail -5 "$TEST_DIR/blockd.log")"
[ "$(epoch)" = "$e0" ] || fail "the lease moved for the snapshot"
more_acked "$(acked)" 10

pattern_end "$uri" "$TEST_DIR/record.json" $blocks
stop_blockd pid
echo "lease-watch-outage: ok"
