#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-takeover.sh - the lease holder dies or hangs (VBK_TEST_BACKENDS).
#
# 1. kill -9 the holder's vbk-blockd (A): a write through B waits for
#    A's lease to run out, fences A and takes over, within the lease
#    duration plus a few seconds (measured and printed), and fails never.
# 2. A restarted A takes the lease back by a hand-off.  Then kill -STOP
#    A with a client connected; that client sends a write (it stays
#    pending in the stopped daemon); B writes the same range, waits A's
#    lease out and fences it.  After kill -CONT, A's pending write and a
#    new write and flush on that client fail (qemu-io would report the
#    errors), and the image holds only B's data, through B and through a
#    new connection to A (which gets a fresh export).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
requires qemu-io

store=$(new_store)
duration=3

qio () {
  qemu-io -f raw -c "$2" "$(host_uri "$1")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed|verification' "$TEST_DIR/qio.out" ||
    fail "qemu-io '$2' through $1: $(cat "$TEST_DIR/qio.out"); $(host_logs)"
}

vbk --store "$store" image create disk --size 64M >/dev/null
start_host A --lease-duration "$duration"
start_host B --lease-duration "$duration"
keep_open A
keep_open B

# ---- 1. kill -9 of the holder -----------------------------------------------
qio A "write -P 0xa1 0 4M"
[ "$(holder)" = hostA ] || fail "holder after A's write: $(holder)"
kill -9 "$pid_A"
wait "$pid_A" 2>/dev/null || true
t0=$(now_ms)
qio B "write -P 0xb1 4M 4M"
t1=$(now_ms)
took=$((t1 - t0))
echo "takeover after kill -9 of the holder: B's write completed in $took ms (lease $duration s)"
[ "$took" -le $(( (duration + 6) * 1000 )) ] || fail "takeover took $took ms"
[ "$(holder)" = hostB ] || fail "holder after takeover: $(holder)"
qio B "read -P 0xa1 0 4M"
qio B "read -P 0xb1 4M 4M"
grep -q "fencing" "$TEST_DIR/B.log" || fail "B did not fence A: $(host_logs)"

# ---- 2. kill -STOP of the holder ----------------------------------------------
start_host A --lease-duration "$duration"
keep_open A
qio A "write -P 0xa2 8M 1M"
[ "$(holder)" = hostA ] || fail "holder after the restarted A's write: $(holder)"

# A client of A, connected before A stops, that writes on cue.
export URI_A=$(host_uri A) GO1=$TEST_DIR/go1 GO2=$TEST_DIR/go2 READY=$TEST_DIR/ready
nbdsh -u "$URI_A" -c - >"$TEST_DIR/stopped-client.out" 2>&1 <<'PY' &
import os, time
def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.02)
open(os.environ["READY"], "w").close()
wait_for(os.environ["GO1"])
for what, fn in (("pending write", lambda: h.pwrite(b"\xa3" * (1 << 20), 8 << 20)),):
    try:
        fn()
        print("%s: succeeded" % what)
    except nbd.Error as e:
        print("%s: failed: %s" % (what, e))
wait_for(os.environ["GO2"])
for what, fn in (("new write", lambda: h.pwrite(b"\xa4" * 65536, 9 << 20)),
                 ("flush", lambda: h.flush())):
    try:
        fn()
        print("%s: succeeded" % what)
    except nbd.Error as e:
        print("%s: failed: %s" % (what, e))
PY
client=$!
for ((t = 0; t < 200; t++)); do [ -e "$READY" ] && break; sleep 0.05; done
[ -e "$READY" ] || fail "A's client did not connect"

kill -STOP "$pid_A"
touch "$GO1"
sleep 0.5
t0=$(now_ms)
qio B "write -P 0xb2 8M 2M"
t1=$(now_ms)
echo "takeover from a stopped holder: B's write completed in $((t1 - t0)) ms"
[ "$(holder)" = hostB ] || fail "holder after the takeover: $(holder)"
kill -CONT "$pid_A"
sleep 1
touch "$GO2"
wait "$client" || fail "A's client: $(cat "$TEST_DIR/stopped-client.out")"
cat "$TEST_DIR/stopped-client.out"
for what in "pending write" "new write" "flush"; do
  grep -q "^$what: failed" "$TEST_DIR/stopped-client.out" ||
    fail "$what through the fenced A did not fail: $(cat "$TEST_DIR/stopped-client.out"); $(host_logs)"
done
grep -q "lease lost" "$TEST_DIR/A.log" || fail "A does not log the lost lease: $(host_logs)"

# Only B's data, through B and through a new connection to A.
qio B "read -P 0xb2 8M 2M"
qio A "read -P 0xb2 8M 2M"
qio B "read -P 0xa1 0 4M"
qio B "read -P 0xb1 4M 4M"
# A new client of A gets a fresh export that can take the lease again.
keep_open A
qio A "write -P 0xa5 16M 1M"
qio B "read -P 0xa5 16M 1M"
[ "$(holder)" = hostA ] || fail "holder after a fresh export's write: $(holder)"
echo "lease-takeover: OK"
