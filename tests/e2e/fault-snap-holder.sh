#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fault-snap-holder.sh - a snapshot requested while the lease holder goes
# away (VBK_TEST_BACKENDS).  `vbk snap create` asks the holder; if nobody
# holds the lease it takes it for the moment.  The holder can vanish
# between the CLI reading the lease and asking:
#  1. the holder was killed (SIGKILL) with its lease recorded: the CLI
#     must wait the dead lease out (as a writer would: lease.h) and take
#     the snapshot itself, with every write flushed before the kill in it;
#  2. the holder's last client disconnects just before the request, so
#     the holder closes the export and releases the lease while the CLI
#     asks it: the CLI must ask the next holder or take the lease itself.
# snap_create reads the lease again when the holder does not answer: it
# takes the lease for the moment if the holder let go, and otherwise
# waits the silent holder's lease out, fences it and takes over.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
store=$(new_store)
vbk --store "$store" image create disk --size 16M --object-size 1M >/dev/null
start_host A

# 1. The holder is killed with its lease recorded.
keep_open A
nbdsh -u "$(host_uri A)" -c '
for i in range(64):
    h.pwrite(bytes([i + 1]) * 4096, i * 65536)
h.flush()'
[ "$(holder)" = hostA ] || fail "A does not hold the lease"
kill -9 "$pid_A"
wait "$pid_A" 2>/dev/null || true
vbk --store "$store" snap create disk@after-kill >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
  fail "case 1: a snapshot after the holder was killed failed: $(cat "$TEST_DIR/err")"
start_host A
nbdsh -u "$(host_uri A disk@after-kill)" -c '
for i in range(64):
    assert h.pread(4096, i * 65536) == bytes([i + 1]) * 4096, "block %d" % i'
echo "case 1: snapshot taken after the holder died, with every flushed write"

# 2. The holder releases the lease (its last client goes) as it is asked.
tries=${VBK_SNAP_RACE_TRIES:-10}
for ((i = 1; i <= tries; i++)); do
  nbdsh -u "$(host_uri A)" -c "h.pwrite(b'x' * 4096, $i * 4096)"
  vbk --store "$store" snap create "disk@race$i" >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
    fail "case 2: try $i: a snapshot while the holder let go failed: $(cat "$TEST_DIR/err")"
done
echo "case 2: $tries snapshots taken while the holder let go"
echo "fault-snap-holder: ok"
