#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-exclusive.sh - `vbk-blockd --exclusive` keeps its leases
# (VBK_TEST_BACKENDS): a write through another host fails with EIO at
# once (the holder refuses the hand-off, no waiting), the holder's own
# writes go on, and only `vbk lease release IMAGE` moves the lease.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires nbdsh
requires python3

store=$(new_store)

# qio NAME CMD: prints qemu-io's output; its exit status is qemu-io's,
# or 1 if qemu-io reports an error.
qio () {
  qemu-io -f raw -c "$2" "$(host_uri "$1")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed|verification' "$TEST_DIR/qio.out"
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
echo "lease-exclusive: OK"
