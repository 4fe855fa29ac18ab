#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-handoff.sh - the writer of an image moves between two hosts and
# back, as in live migration (VBK_TEST_BACKENDS).  Two vbk-blockd
# processes with their own host ids and sockets play hosts A and B, both
# serving the image writable.  qemu-io writes a distinct pattern through
# A, then B, then A; each step's first write takes the lease from the
# other daemon (it must wait, never fail), and everything written before
# reads back through the other daemon (qemu-io read -P, qemu-img compare
# against a reference file).  `vbk lease status --json` names the holder
# and the epoch grows with each hand-off.  Prints the hand-off latency:
# from the write request to its completion, as qemu-io times it.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires qemu-img
requires nbdsh
requires python3

store=$(new_store)

logs () { tail -n 20 "$TEST_DIR"/*.log; }

# status_field FIELD: from `vbk lease status disk --json`.
status_field ()
{
  vbk --store "$store" lease status disk --json |
    python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print("null" if v is None else v)' "$1"
}

# qio NAME CMD: runs one qemu-io command against daemon NAME; fails the
# test on any error.
qio ()
{
  qemu-io -f raw -c "$2" "$(host_uri "$1")" >"$TEST_DIR/qio.out" 2>&1 ||
    fail "qemu-io '$2' through $1: $(cat "$TEST_DIR/qio.out"); $(logs)"
  if grep -Eq 'error|failed|Pattern verification' "$TEST_DIR/qio.out"; then
    fail "qemu-io '$2' through $1: $(cat "$TEST_DIR/qio.out"); $(logs)"
  fi
}

# timed_write NAME PATTERN OFF LEN: a write through NAME; prints its
# latency in ms (qemu-io's one-op rate is precise where its seconds are
# not).
timed_write ()
{
  qio "$1" "write -P $2 $3 $4"
  python3 - "$TEST_DIR/qio.out" <<'PY'
import re, sys
m = re.search(r"and ([0-9.]+) ops/sec", open(sys.argv[1]).read())
print("%.1f" % (1000.0 / float(m.group(1))) if m else "?")
PY
}

# The reference: the same writes on a local raw file.
ref=$TEST_DIR/ref.raw
truncate -s 64M "$ref"
ref_write () { qemu-io -f raw -c "write -P $1 $2 $3" "$ref" >/dev/null; }
compare_with () {
  qemu-img compare -f raw -F raw "$ref" "$(host_uri "$1")" >"$TEST_DIR/cmp.out" 2>&1 ||
    fail "image through $1 differs from the reference: $(cat "$TEST_DIR/cmp.out")"
}

vbk --store "$store" image create disk --size 64M >/dev/null
start_host A
start_host B
keep_open A
keep_open B
[ "$(status_field held)" = False ] || fail "lease held before any write"

# ---- Step 1: A writes (nobody holds the lease yet) --------------------------
qio A "write -P 0x11 0 4M"
ref_write 0x11 0 4M
qio A "write -P 0x12 20M 1M"
ref_write 0x12 20M 1M
[ "$(status_field host)" = hostA ] || fail "holder after A's write: $(status_field host)"
epoch1=$(status_field epoch)
# B reads A's data (no lease needed), also where B had looked before.
qio B "read -P 0x11 0 4M"
qio B "read -P 0x12 20M 1M"
compare_with B
# A flush through B, which never held the lease, succeeds.
qio B "flush"
[ "$(status_field host)" = hostA ] || fail "a flush through B moved the lease"

# ---- Step 2: B writes: hand-off A -> B --------------------------------------
lat_ab=$(timed_write B 0x22 8M 4M)
ref_write 0x22 8M 4M
qio B "write -P 0x23 0 64k"
ref_write 0x23 0 64k
[ "$(status_field host)" = hostB ] || fail "holder after B's write: $(status_field host)"
epoch2=$(status_field epoch)
[ "$epoch2" -gt "$epoch1" ] || fail "epoch did not grow: $epoch1 -> $epoch2"
# Everything written so far, through A, which no longer holds the lease.
qio A "read -P 0x23 0 64k"
qio A "read -P 0x11 64k 4032k"
qio A "read -P 0x22 8M 4M"
qio A "read -P 0x12 20M 1M"
compare_with A
compare_with B

# ---- Step 3: A writes again: hand-off B -> A --------------------------------
lat_ba=$(timed_write A 0x33 2M 8M)
ref_write 0x33 2M 8M
[ "$(status_field host)" = hostA ] || fail "holder after A's second write: $(status_field host)"
epoch3=$(status_field epoch)
[ "$epoch3" -gt "$epoch2" ] || fail "epoch did not grow: $epoch2 -> $epoch3"
qio B "read -P 0x23 0 64k"
qio B "read -P 0x11 64k 1984k"
qio B "read -P 0x33 2M 8M"
qio B "read -P 0x22 10M 2M"
qio B "read -P 0x12 20M 1M"
compare_with B
compare_with A
# Untouched space still reads as zeros through both.
qio A "read -P 0 30M 4M"
qio B "read -P 0 30M 4M"

handoffs=$(status_field handoffs)
[ "$handoffs" -ge 2 ] || fail "hand-offs counted: $handoffs"
echo "hand-off latency (write request to completion): A->B ${lat_ab} ms, B->A ${lat_ba} ms (epochs $epoch1 -> $epoch2 -> $epoch3)"

# ---- A clean stop releases the lease; B takes it at once --------------------
kill "$keeper_A"
stop_blockd pid_A
[ "$(status_field held)" = False ] || fail "lease still held after A stopped: $(status_field host)"
lat_b=$(timed_write B 0x44 40M 1M)
ref_write 0x44 40M 1M
compare_with B
kill "$keeper_B"
stop_blockd pid_B
[ "$(status_field held)" = False ] || fail "lease still held after B stopped"
echo "after A's SIGTERM: B's first write ${lat_b} ms"
echo "lease-handoff: OK"
