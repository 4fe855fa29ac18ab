#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-clients.sh - vbk-blockd against real NBD clients, bytes compared
# with cmp; runs on every store backend (VBK_TEST_BACKENDS):
#   nbdinfo: --list, flags, block sizes, --map (holes vs data)
#   qemu-img: convert to and from the export, compare, map
#   qemu-io: aio reads/writes, discard, write -z, flush
#   nbdcopy: --connections=4 --threads=4 both ways (multi-conn), and from
#   a sparse file (zero requests past the advertised maximum)
#   an image created while the daemon runs is served without restart,
#   --read-only refuses writes, SIGTERM exits 0.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-img
requires qemu-io
requires nbdinfo
requires nbdcopy

store=$(new_store)
sock=$TEST_DIR/blockd.sock

uri () { echo "nbd+unix:///$1?socket=$sock"; }

vbk --store "$store" image create disk1 --size 64M >/dev/null
vbk --store "$store" image create disk2 --size 64M >/dev/null
start_blockd pid "$sock"

# ---- nbdinfo ---------------------------------------------------------------
nbdinfo --list "nbd+unix:///?socket=$sock" >"$TEST_DIR/list"
grep -q 'export="disk1"' "$TEST_DIR/list" || fail "disk1 not listed"
grep -q 'export="disk2"' "$TEST_DIR/list" || fail "disk2 not listed"
nbdinfo "$(uri disk1)" >"$TEST_DIR/info"
for want in "export-size: 67108864" "can_flush: true" "can_fua: true" \
            "can_multi_conn: true" "can_trim: true" "can_zero: true" \
            "can_fast_zero: true" "is_read_only: false" \
            "block_size_minimum: 1" "block_size_preferred: 4096" \
            "block_size_maximum: 33554432" "base:allocation"; do
  grep -q "$want" "$TEST_DIR/info" || fail "nbdinfo lacks '$want': $(cat "$TEST_DIR/info")"
done
nbdinfo --map "$(uri disk1)" >"$TEST_DIR/map"
grep -Eq '^ +0 +67108864 +3 +hole,zero' "$TEST_DIR/map" ||
  fail "empty image is not one hole: $(cat "$TEST_DIR/map")"

# ---- qemu-img convert to the export, compare, map --------------------------
src=$TEST_DIR/src.raw
truncate -s 64M "$src"
head -c 5M /dev/urandom | dd of="$src" bs=1M seek=8 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$src" bs=1M seek=40 conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$src" "$(uri disk1)"
qemu-img compare -f raw -F raw "$src" "$(uri disk1)" >/dev/null ||
  fail "qemu-img compare after convert"
qemu-img map -f raw --output=json "$(uri disk1)" >"$TEST_DIR/qmap"
python3 - "$TEST_DIR/qmap" <<'PY' || fail "qemu-img map: $(cat "$TEST_DIR/qmap")"
import json, sys
m = json.load(open(sys.argv[1]))
data = [(e["start"], e["length"]) for e in m if e["data"]]
# Data only where we wrote (object granularity may round it out).
assert data, m
for s, l in data:
    assert (s < 14 << 20 and s + l > 8 << 20) or (s < 41 << 20 and s + l > 40 << 20), (s, l)
assert not any(s <= 20 << 20 < s + l for s, l in data), m
PY
nbdinfo --map "$(uri disk1)" | grep -q "data" || fail "nbdinfo --map shows no data"
qemu-img convert -f raw -O raw "$(uri disk1)" "$TEST_DIR/back.raw"
cmp "$src" "$TEST_DIR/back.raw" || fail "convert from the export differs"

# ---- qemu-io ---------------------------------------------------------------
qemu-io -f raw \
  -c "aio_write -P 0xa5 0 1M" -c "aio_write -P 0x5a 2M 64k" \
  -c "aio_write -P 0x11 3M 4k" -c "aio_flush" \
  -c "aio_read -P 0xa5 0 1M" -c "aio_read -P 0x5a 2M 64k" -c "aio_flush" \
  -c "discard 8M 4M" -c "read -P 0 8M 4M" \
  -c "write -z 40M 512k" -c "read -P 0 40M 512k" \
  -c "write -P 0x77 -f 50M 4k" -c "read -P 0x77 50M 4k" \
  -c "flush" "$(uri disk1)" >"$TEST_DIR/qio" 2>&1 ||
  fail "qemu-io failed: $(cat "$TEST_DIR/qio")"
grep -q "Pattern verification failed" "$TEST_DIR/qio" && fail "qemu-io pattern: $(cat "$TEST_DIR/qio")"
python3 - "$src" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    for off, length, val in [(0, 1 << 20, 0xa5), (2 << 20, 64 << 10, 0x5a),
                             (3 << 20, 4096, 0x11), (8 << 20, 4 << 20, 0),
                             (40 << 20, 512 << 10, 0), (50 << 20, 4096, 0x77)]:
        f.seek(off); f.write(bytes([val]) * length)
PY
qemu-img convert -f raw -O raw "$(uri disk1)" "$TEST_DIR/back2.raw"
cmp "$src" "$TEST_DIR/back2.raw" || fail "image differs from the model after qemu-io"

# ---- nbdcopy with 4 connections, both ways ---------------------------------
nbdcopy --connections=4 --threads=4 "$(uri disk1)" "$(uri disk2)"
nbdcopy --connections=4 --threads=4 "$(uri disk2)" "$TEST_DIR/copy.raw"
cmp "$src" "$TEST_DIR/copy.raw" || fail "nbdcopy round trip differs"
head -c 64M /dev/urandom >"$TEST_DIR/rnd.raw"
nbdcopy --connections=4 --threads=4 "$TEST_DIR/rnd.raw" "$(uri disk2)"
nbdcopy --connections=4 --threads=4 "$(uri disk2)" "$TEST_DIR/rnd2.raw"
cmp "$TEST_DIR/rnd.raw" "$TEST_DIR/rnd2.raw" || fail "nbdcopy of random data differs"
# A sparse source: nbdcopy zeroes its 56 MiB hole with one WRITE_ZEROES
# larger than the advertised maximum block size.
head -c 1M /dev/urandom >"$TEST_DIR/sparse.raw"
truncate -s 64M "$TEST_DIR/sparse.raw"
nbdcopy "$TEST_DIR/sparse.raw" "$(uri disk2)" \
  || fail "nbdcopy of a sparse file into the export failed"
nbdcopy "$(uri disk2)" "$TEST_DIR/sparse2.raw"
cmp "$TEST_DIR/sparse.raw" "$TEST_DIR/sparse2.raw" || fail "nbdcopy of a sparse file differs"

# ---- a new image is served without restart --------------------------------
vbk --store "$store" image create late --size 8M >/dev/null
nbdinfo --size "$(uri late)" | grep -qx 8388608 || fail "new image not served"
nbdinfo --list "nbd+unix:///?socket=$sock" | grep -q 'export="late"' ||
  fail "new image not listed"
expect_fail "" nbdinfo "$(uri nosuchimage)"

stop_blockd pid
[ ! -e "$sock" ] || fail "socket left behind after SIGTERM"

# ---- read-only, and no busy polling (every read sleeps in recv) ----------
start_blockd pid "$sock" --read-only --poll-us 0
nbdinfo "$(uri disk1)" | grep -q "is_read_only: true" || fail "not read-only"
expect_fail "" qemu-io -f raw -c "write 0 4k" "$(uri disk1)"
qemu-img convert -f raw -O raw "$(uri disk1)" "$TEST_DIR/ro.raw"
cmp "$src" "$TEST_DIR/ro.raw" || fail "read-only export content differs"
stop_blockd pid
rc=0
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$sock" --poll-us 5000 \
  2>"$TEST_DIR/poll.err" || rc=$?
[ "$rc" -ne 0 ] && grep -q "poll_us: 5000: expected 0-1000" "$TEST_DIR/poll.err" ||
  fail "--poll-us 5000: exit $rc, $(cat "$TEST_DIR/poll.err")"
echo "blockd-clients: OK"
