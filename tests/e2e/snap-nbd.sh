#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snap-nbd.sh - snapshots through vbk-blockd (VBK_TEST_BACKENDS):
#   `vbk snap create IMG@s1` while the daemon holds the lease (the holder
#   takes it); the export "IMG@s1" is listed, read-only, holds the old
#   bytes (qemu-img compare, qemu-io read -P) and maps its allocation;
#   the live export's metadata context qemu:dirty-bitmap:s1 marks the
#   objects written since s1, the same as `vbk diff IMG --from s1`, also
#   together with base:allocation (one chunk per context).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires qemu-img
requires nbdinfo
requires nbdsh
requires python3

store=$(new_store)
sock=$TEST_DIR/A.sock
MiB=$((1 << 20))

start_host A
uri () { echo "nbd+unix:///$1?socket=$sock"; }
logs () { tail -n 20 "$TEST_DIR/A.log"; }
qio () {
  local ro=
  case $1 in *@*) ro=-r ;; esac
  qemu-io $ro -f raw -c "$2" "$(uri "$1")" >"$TEST_DIR/qio.out" 2>&1 &&
    ! grep -Eq 'error|failed|verification' "$TEST_DIR/qio.out" ||
    fail "qemu-io '$2' on $1: $(cat "$TEST_DIR/qio.out"); $(logs)"
}

# 64 MiB in objects of 4 MiB: objects 0..15.
vbk --store "$store" image create disk --size 64M >/dev/null
ready=$TEST_DIR/keeper
(PATH=/usr/bin:$PATH READY=$ready exec nbdsh -u "$(uri disk)" \
   -c 'import os, time; open(os.environ["READY"], "w").close(); time.sleep(3600)') &
cleanup_fn "kill $! 2>/dev/null"
for ((i = 0; i < 200; i++)); do [ -e "$ready" ] && break; sleep 0.05; done

ref=$TEST_DIR/s1.raw
truncate -s 64M "$ref"
for w in "0x11 0 6M" "0x12 40M 1M"; do
  qio disk "write -P $w"
  qemu-io -f raw -c "write -P $w" "$ref" >/dev/null
done
vbk --store "$store" lease status disk --json | grep -q '"host": *"hostA"' ||
  fail "the daemon does not hold the lease"

# ---- The snapshot, taken by the holder --------------------------------------
vbk --store "$store" snap create disk@s1 >/dev/null || fail "vbk snap create: $(logs)"
grep -q "snapshot s1: taken" "$TEST_DIR/A.log" ||
  fail "the holder did not take the snapshot: $(logs)"

# Writes after it: objects 1, 5 and 15.
qio disk "write -P 0x21 5M 2M"
qio disk "write -P 0x22 20M 4k"
qio disk "write -P 0x23 63M 1M"

# ---- The snapshot export ---------------------------------------------------------
nbdinfo --list "nbd+unix:///?socket=$sock" >"$TEST_DIR/list"
grep -q 'export="disk@s1"' "$TEST_DIR/list" || fail "disk@s1 not listed: $(cat "$TEST_DIR/list")"
nbdinfo "$(uri disk@s1)" >"$TEST_DIR/info"
grep -q "is_read_only: true" "$TEST_DIR/info" || fail "disk@s1 is not read-only: $(cat "$TEST_DIR/info")"
grep -q "export-size: 67108864" "$TEST_DIR/info" || fail "disk@s1 size: $(cat "$TEST_DIR/info")"
qemu-img compare -f raw -F raw "$ref" "$(uri disk@s1)" >/dev/null ||
  fail "disk@s1 does not hold the bytes of the snapshot"
qio disk@s1 "read -P 0x11 0 6M"
qio disk@s1 "read -P 0 6M 2M"
qio disk@s1 "read -P 0 20M 4k"
nbdsh -u "$(uri disk@s1)" -c - <<'PY' || fail "a write to the snapshot export did not fail with EPERM"
assert h.is_read_only()
try:
    h.pwrite(b"x" * 4096, 0)
    raise SystemExit("write succeeded")
except nbd.Error as e:
    assert "EPERM" in str(e) or "not permitted" in str(e), e
PY
# base:allocation of the snapshot: data in objects 0, 1 and 10 only.
nbdinfo --map "$(uri disk@s1)" >"$TEST_DIR/smap"
python3 - "$TEST_DIR/smap" <<'PY' || fail "map of disk@s1: $(cat "$TEST_DIR/smap")"
import sys
data = []
for line in open(sys.argv[1]):
    off, length, typ = line.split()[:3]
    if int(typ) & 1 == 0:
        data.append((int(off), int(length)))
M = 1 << 20
assert data == [(0, 8 * M), (40 * M, 4 * M)], data
PY
# The live image moved on.
qio disk "read -P 0x21 5M 2M"

# ---- qemu:dirty-bitmap:s1 on the live export ----------------------------------
nbdinfo "$(uri disk)" >"$TEST_DIR/linfo"
grep -q "qemu:dirty-bitmap:s1" "$TEST_DIR/linfo" ||
  fail "the live export does not list qemu:dirty-bitmap:s1: $(cat "$TEST_DIR/linfo")"
# vbk diff first: it has the holder log the parts it saw change, and the
# bitmap read after it shows the same parts.
vbk --store "$store" diff disk --from s1 --json >"$TEST_DIR/diff.json" || fail "vbk diff"
nbdinfo --json --map=qemu:dirty-bitmap:s1 "$(uri disk)" >"$TEST_DIR/dmap.json" ||
  fail "nbdinfo --map=qemu:dirty-bitmap:s1"
python3 - "$TEST_DIR/dmap.json" "$TEST_DIR/diff.json" <<'PY' || fail "dirty bitmap vs vbk diff: $(cat "$TEST_DIR/dmap.json" "$TEST_DIR/diff.json")"
import json, sys
M = 1 << 20
m = json.load(open(sys.argv[1]))
d = json.load(open(sys.argv[2]))
dirty, pos = [], 0
for e in m:
    assert e["offset"] == pos, (e, pos)
    pos += e["length"]
    if e["type"] & 1:
        if dirty and dirty[-1][0] + dirty[-1][1] == e["offset"]:
            dirty[-1] = (dirty[-1][0], dirty[-1][1] + e["length"])
        else:
            dirty.append((e["offset"], e["length"]))
assert pos == 64 * M, pos
want = [(x["offset"], x["length"]) for x in d["extents"]]
assert dirty == want, (dirty, want)
# Written since s1: objects 1 (5M-7M), 5 (20M) and 15 (63M), to the
# 128 KiB part.
assert dirty == [(5 * M, 2 * M), (20 * M, 128 << 10), (63 * M, M)], dirty
print("dirty bitmap s1: %s (= vbk diff)" % ", ".join("%dK+%dK" % (o >> 10, l >> 10) for o, l in dirty))
PY

# Both contexts at once: one BLOCK_STATUS chunk each, with their own ids;
# also with REQ_ONE, and over a range that starts inside an object.
nbdsh -u "$(uri disk)" -c - <<'PY' || fail "two metadata contexts at once"
M = 1 << 20
h2 = nbd.NBD()
h2.add_meta_context("base:allocation")
h2.add_meta_context("qemu:dirty-bitmap:s1")
h2.add_meta_context("qemu:dirty-bitmap:nosuch")
h2.connect_uri(h.get_uri())
assert h2.can_meta_context("base:allocation")
assert h2.can_meta_context("qemu:dirty-bitmap:s1")
assert not h2.can_meta_context("qemu:dirty-bitmap:nosuch")
seen = {}
def cb(ctx, off, entries, err):
    seen[ctx] = entries
    return 0
# block_status (count, offset, ...): 2M..22M
h2.block_status(20 * M, 2 * M, cb)
assert seen["base:allocation"] == [6 * M, 0, 12 * M, 3, 2 * M, 0], seen
# Parts, not objects: the vbk diff above had the holder log them.
assert seen["qemu:dirty-bitmap:s1"] == [3 * M, 0, 2 * M, 1, 13 * M, 0, 128 << 10, 1,
                                        2 * M - (128 << 10), 0], seen
seen.clear()
h2.block_status(20 * M, 30 * M, cb, nbd.CMD_FLAG_REQ_ONE)
assert seen["base:allocation"] == [10 * M, 3], seen
assert seen["qemu:dirty-bitmap:s1"] == [20 * M, 0], seen
h2.shutdown()
print("base:allocation and qemu:dirty-bitmap:s1 together: ok")
PY
# LIST_META_CONTEXT wildcards.
nbdsh -c - <<PY || fail "LIST_META_CONTEXT queries"
h.set_opt_mode(True)
h.set_export_name("disk")
h.connect_uri("$(uri disk)")
got = []
h.add_meta_context("qemu:dirty-bitmap:")
h.opt_list_meta_context(lambda name: got.append(name) or 0)
assert got == ["qemu:dirty-bitmap:s1"], got
h.opt_abort()
PY
echo "snap-nbd: OK"
