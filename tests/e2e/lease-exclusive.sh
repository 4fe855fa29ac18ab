#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-exclusive.sh - `vbk-blockd --exclusive` keeps its leases
# (VBK_TEST_BACKENDS): a write through another host fails with EIO at
# once (the holder refuses the hand-off, no waiting), the holder's own
# writes go on, and only `vbk lease release IMAGE` moves the lease.
# Then per export, from the config file: [export NAME] exclusive and
# read_only apply to that image alone.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires nbdsh
requires python3

store=$(new_store)

# qio NAME CMD [IMAGE]: runs qemu-io on IMAGE (default disk) of host
# NAME, output in qio.out; its exit status is qemu-io's, or 1 if qemu-io
# reports an error.
qio () {
  qemu-io -f raw -c "$2" "$(host_uri "$1" "${3:-disk}")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed|verification|not permitted' "$TEST_DIR/qio.out"
}

vbk --store "$store" image create disk --size 64M >/dev/null
start_host A --exclusive
start_host B
keep_open A
keep_open B

qio A "write -P 0xa1 0 1M" || fail "A's write: $(cat "$TEST_DIR/qio.out"); $(host_logs)"
[ "$(holder)" = hostA ] || fail "holder after A's write: $(holder)"

# B's write is refused, quickly, with EIO; nothing of it lands.
t0=$(now_ms)
if qio B "write -P 0xb1 0 64k"; then
  fail "B's write succeeded against an exclusive holder: $(cat "$TEST_DIR/qio.out")"
fi
t1=$(now_ms)
grep -q "Input/output error" "$TEST_DIR/qio.out" ||
  fail "B's write did not fail with EIO: $(cat "$TEST_DIR/qio.out")"
echo "B's write refused in $((t1 - t0)) ms: $(grep -m1 -i error "$TEST_DIR/qio.out")"
grep -q "refused" "$TEST_DIR/B.log" || fail "B does not log the refusal: $(host_logs)"
[ "$(holder)" = hostA ] || fail "the exclusive lease moved: $(holder)"
# A's writes go on, B reads them.
qio A "write -P 0xa2 1M 1M" || fail "A's second write: $(cat "$TEST_DIR/qio.out")"
qio B "read -P 0xa1 0 1M" || fail "B reads: $(cat "$TEST_DIR/qio.out")"
qio B "read -P 0xa2 1M 1M" || fail "B reads: $(cat "$TEST_DIR/qio.out")"

# The operator moves it.
vbk --store "$store" lease release disk >/dev/null || fail "vbk lease release: $(host_logs)"
qio B "write -P 0xb2 0 64k" || fail "B's write after the release: $(cat "$TEST_DIR/qio.out"); $(host_logs)"
[ "$(holder)" = hostB ] || fail "holder after the release: $(holder)"
qio A "read -P 0xb2 0 64k" || fail "A does not see B's write: $(cat "$TEST_DIR/qio.out")"
qio A "read -P 0xa1 64k 960k" || fail "A's data: $(cat "$TEST_DIR/qio.out")"

# Per export.  Host C (no --exclusive) keeps disk2 but hands disk3
# over; it serves ro read-only.  A bad section is a clear error.
for i in disk2 disk3 ro; do
  vbk --store "$store" image create "$i" --size 16M >/dev/null
done
printf '[export disk2]\nexclusive = yes\n[export ro]\nread_only = true\n' \
  >"$TEST_DIR/C.conf"
printf '[export disk2]\nlease_duration = 3\n' >"$TEST_DIR/bad.conf"
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$TEST_DIR/bad.sock" \
  --config "$TEST_DIR/bad.conf" 2>"$TEST_DIR/bad.err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "line 2: \[export disk2\]: unknown setting 'lease_duration'" \
  "$TEST_DIR/bad.err" || fail "a bad [export] section: exit $rc, $(cat "$TEST_DIR/bad.err")"
start_blockd pid_C "$TEST_DIR/C.sock" --host-id hostC --lease-duration 3 \
  --config "$TEST_DIR/C.conf"
start_host D
keep_open C disk2
keep_open C disk3
keep_open D disk2
keep_open D disk3
qio C "write -P 0xc1 0 64k" disk2 || fail "C's write to disk2: $(cat "$TEST_DIR/qio.out")"
qio C "write -P 0xc1 0 64k" disk3 || fail "C's write to disk3: $(cat "$TEST_DIR/qio.out")"
if qio D "write -P 0xd1 0 64k" disk2; then
  fail "D's write to disk2 succeeded against [export disk2] exclusive"
fi
grep -q "Input/output error" "$TEST_DIR/qio.out" ||
  fail "D's write to disk2 did not fail with EIO: $(cat "$TEST_DIR/qio.out")"
[ "$(holder disk2)" = hostC ] || fail "disk2 moved: $(holder disk2)"
qio D "write -P 0xd1 0 64k" disk3 ||
  fail "D's write to disk3 (not exclusive): $(cat "$TEST_DIR/qio.out"); $(host_logs C D)"
[ "$(holder disk3)" = hostD ] || fail "disk3 did not move: $(holder disk3)"
if qio C "write -P 0xc2 0 64k" ro; then
  fail "a write to [export ro] read_only succeeded"
fi
qio D "write -P 0xd2 0 64k" ro || fail "D's write to ro: $(cat "$TEST_DIR/qio.out")"
qemu-io -r -f raw -c "read -P 0xd2 0 64k" "$(host_uri C ro)" >"$TEST_DIR/qio.out" 2>&1 &&
  ! grep -Eq 'error|failed|verification' "$TEST_DIR/qio.out" ||
  fail "C reads ro: $(cat "$TEST_DIR/qio.out")"
nbdinfo --json "$(host_uri C ro)" | grep -q '"is_read_only": true' ||
  fail "nbdinfo does not show ro read-only on C"
echo "lease-exclusive: OK"
