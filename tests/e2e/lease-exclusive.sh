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

start_daemon ()
{
  local name=$1 sock=$TEST_DIR/$1.sock
  shift
  rm -f "$sock"
  "$VBK_BIN/vbk-blockd" --store "$store" --socket "$sock" --host-id "host$name" \
    --lease-duration 3 "$@" 2>>"$TEST_DIR/$name.log" &
  eval "pid_$name=$!"
  cleanup_fn "kill -9 $! 2>/dev/null"
  wait_for_socket "$sock"
}
uri () { echo "nbd+unix:///disk?socket=$TEST_DIR/$1.sock"; }
logs () { tail -n 20 "$TEST_DIR"/A.log "$TEST_DIR"/B.log; }
keep_open ()
{
  local ready=$TEST_DIR/keeper-$1-$RANDOM
  (PATH=/usr/bin:$PATH READY=$ready exec nbdsh -u "$(uri "$1")" \
     -c 'import os, time; open(os.environ["READY"], "w").close(); time.sleep(3600)') &
  cleanup_fn "kill $! 2>/dev/null"
  for ((i = 0; i < 200; i++)); do [ -e "$ready" ] && return 0; sleep 0.05; done
  fail "idle client of $1 did not connect"
}
holder () {
  vbk --store "$store" lease status disk --json |
    python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["host"] if v["held"] else "none")'
}
# qio NAME CMD: prints qemu-io's output; its exit status is qemu-io's,
# or 1 if qemu-io reports an error.
qio () {
  qemu-io -f raw -c "$2" "$(uri "$1")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed|verification' "$TEST_DIR/qio.out"
}
now_ms () { date +%s%3N; }

vbk --store "$store" image create disk --size 64M >/dev/null
start_daemon A --exclusive
start_daemon B
keep_open A
keep_open B

qio A "write -P 0xa1 0 1M" || fail "A's write: $(cat "$TEST_DIR/qio.out"); $(logs)"
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
grep -q "refused" "$TEST_DIR/B.log" || fail "B does not log the refusal: $(logs)"
[ "$(holder)" = hostA ] || fail "the exclusive lease moved: $(holder)"
# A's writes go on, B reads them.
qio A "write -P 0xa2 1M 1M" || fail "A's second write: $(cat "$TEST_DIR/qio.out")"
qio B "read -P 0xa1 0 1M" || fail "B reads: $(cat "$TEST_DIR/qio.out")"
qio B "read -P 0xa2 1M 1M" || fail "B reads: $(cat "$TEST_DIR/qio.out")"

# The operator moves it.
vbk --store "$store" lease release disk >/dev/null || fail "vbk lease release: $(logs)"
qio B "write -P 0xb2 0 64k" || fail "B's write after the release: $(cat "$TEST_DIR/qio.out"); $(logs)"
[ "$(holder)" = hostB ] || fail "holder after the release: $(holder)"
qio A "read -P 0xb2 0 64k" || fail "A does not see B's write: $(cat "$TEST_DIR/qio.out")"
qio A "read -P 0xa1 64k 960k" || fail "A's data: $(cat "$TEST_DIR/qio.out")"
echo "lease-exclusive: OK"
