#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# lease-bounce.sh - two writers on one image, through two hosts, is a
# misconfiguration that looks like endless hand-offs (VBK_TEST_BACKENDS).
# Two clients write in loops through A and B at once; once the lease has
# bounced past the limit (5 hand-offs in 10 s) hand-offs are refused:
# one side's writes fail with EIO while the other goes on, and
# `vbk lease status` shows the conflict.  `vbk lease release` clears it.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires nbdsh
requires python3

store=$(new_store)


vbk --store "$store" image create disk --size 64M >/dev/null
start_host A
start_host B

# writer NAME OFFSET: writes 4 KiB blocks in a loop for up to 20 s, until
# it has seen 3 errors; prints its counts and its first error.
writer='
import os, sys, time
name, off = os.environ["NAME"], int(os.environ["OFF"])
ok = errs = 0
first = None
end = time.monotonic() + 20
while time.monotonic() < end and errs < 3:
    try:
        h.pwrite(name.encode() * 4096, off + (ok % 256) * 4096)
        ok += 1
    except nbd.Error as e:
        errs += 1
        first = first or str(e)
        time.sleep(0.2)
    time.sleep(0.005)
print("%s: %d writes acknowledged, %d failed%s" % (name, ok, errs, ", first: " + first if first else ""))
'
NAME=A OFF=0 nbdsh -u "$(host_uri A)" -c "$writer" >"$TEST_DIR/a.out" 2>&1 &
wa=$!
NAME=B OFF=$((8 << 20)) nbdsh -u "$(host_uri B)" -c "$writer" >"$TEST_DIR/b.out" 2>&1 &
wb=$!
wait "$wa" || fail "writer A: $(cat "$TEST_DIR/a.out")"
wait "$wb" || fail "writer B: $(cat "$TEST_DIR/b.out")"
cat "$TEST_DIR/a.out" "$TEST_DIR/b.out"

errs_a=$(grep -Eo '[0-9]+ failed' "$TEST_DIR/a.out" | grep -Eo '[0-9]+')
errs_b=$(grep -Eo '[0-9]+ failed' "$TEST_DIR/b.out" | grep -Eo '[0-9]+')
[ "$errs_a" -gt 0 ] || [ "$errs_b" -gt 0 ] ||
  fail "two writers for 20 s and no error on either side; $(host_logs)"
[ "$errs_a" -eq 0 ] || [ "$errs_b" -eq 0 ] ||
  fail "both sides got errors: one writer should have kept the lease; $(host_logs)"
grep -q "Input/output error" "$TEST_DIR/a.out" "$TEST_DIR/b.out" ||
  fail "the refused writes did not fail with EIO"

vbk --store "$store" lease status disk --json >"$TEST_DIR/status.json"
python3 - "$TEST_DIR/status.json" <<'PY' || fail "lease status: $(cat "$TEST_DIR/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["conflict"], "no conflict shown"
assert "bounced" in s["conflict"], s["conflict"]
assert s["handoffs"] >= 5, s["handoffs"]
print("vbk lease status: %s (%d hand-offs)" % (s["conflict"], s["handoffs"]))
PY
grep -q "refused hand-off" "$TEST_DIR/A.log" "$TEST_DIR/B.log" ||
  fail "no refusal logged: $(host_logs)"

# The operator clears it.
vbk --store "$store" lease release disk >/dev/null || fail "vbk lease release"
vbk --store "$store" lease status disk --json |
  python3 -c 'import json,sys; s=json.load(sys.stdin); assert not s["conflict"], s' ||
  fail "conflict still shown after vbk lease release"
nbdsh -u "$(host_uri B)" -c 'h.pwrite(b"b" * 4096, 0)' || fail "B cannot write after the release"
nbdsh -u "$(host_uri A)" -c 'assert h.pread(4096, 0) == b"b" * 4096' || fail "A does not see B's write"
echo "lease-bounce: OK"
