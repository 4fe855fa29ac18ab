#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-copy.sh - "vbk image import" and "export" on the copy engine, once
# per store backend (VBK_TEST_BACKENDS):
# - sparse both ways: the file's holes are not read, aligned 64 KiB blocks
#   of zeros inside its data are not written (counted by --json, and the
#   image has only the objects with data); export reads only allocated
#   extents and leaves holes and zero blocks as holes;
# - progress: --progress json prints JSON lines on stderr ending with a
#   finished line that covers the whole size; --progress bar draws a bar;
# - --threads N (1 works like 8; out of range is a usage error);
# - SIGINT stops an import (the image is removed) and an export (no file
#   is left), with "interrupted";
# - a block device (a loop device, as root): export writes every byte
#   (holes and zero blocks too, over old garbage) and import reads it.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados

M=$((1 << 20))
K=1024
S=$(new_store)
v () { vbk --store "$S" "$@"; }
field () { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
objects () { v image info "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["objects"])'; }

# ---- sparse both ways ------------------------------------------------------
# 16 MiB: object 0 written in full (random 4 KiB at 0 and 64 KiB at
# 1 MiB + 100, zeros around: three 64 KiB blocks with data), object 1 a
# hole, object 2 zeros that are written, object 3 a hole but for 4 KiB of
# random data at its end.
src=$TEST_DIR/src.raw
python3 - "$src" <<'EOF'
import os, sys
M, K = 1 << 20, 1024
f = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(f, 16 * M)
os.pwrite(f, bytes(4 * M), 0)
os.pwrite(f, os.urandom(4 * K), 0)
os.pwrite(f, os.urandom(64 * K), M + 100)
os.pwrite(f, bytes(4 * M), 8 * M)
os.pwrite(f, os.urandom(4 * K), 16 * M - 4 * K)
os.close(f)
EOF
v image import "$src" disk --json >"$TEST_DIR/import.json"
cat "$TEST_DIR/import.json"
[ "$(field "$TEST_DIR/import.json" size)" -eq $((16 * M)) ] || fail "import: size"
# 64 KiB at 0, 128 KiB around 1 MiB + 100, and the 4 KiB at the end (the
# rest of its block is a hole of the file: not read).
[ "$(field "$TEST_DIR/import.json" written)" -eq $((196 * K)) ] ||
  fail "import: zero blocks were written (or data left out)"
read_b=$(field "$TEST_DIR/import.json" read)
holes=$(field "$TEST_DIR/import.json" holes)
[ $((read_b + holes)) -eq $((16 * M)) ] || fail "import: read + holes != size"
# The file system knows the hole of object 1 (ext4, xfs, tmpfs do).
[ "$holes" -ge $((4 * M)) ] || fail "import: the hole of object 1 was read"
[ "$(objects disk)" -eq 2 ] || fail "import: expected objects 0 and 3, got $(objects disk)"

out=$TEST_DIR/out.raw
v image export disk "$out" --json >"$TEST_DIR/export.json"
cat "$TEST_DIR/export.json"
cmp "$src" "$out" || fail "export differs from the source"
[ "$(field "$TEST_DIR/export.json" written)" -eq $((256 * K)) ] ||
  fail "export: zero blocks were written"
[ "$(field "$TEST_DIR/export.json" read)" -le $((8 * M)) ] ||
  fail "export: read more than the two objects"
alloc=$(($(stat -c '%b * %B' "$out")))
[ "$alloc" -le $((1 * M)) ] || fail "export is not sparse: $alloc bytes allocated"

# A snapshot exports the same way.
v snap create disk@s1
v image export disk@s1 "$TEST_DIR/snap.raw"
cmp "$src" "$TEST_DIR/snap.raw" || fail "snapshot export differs"

# ---- progress ----------------------------------------------------------------
check_progress ()   # FILE LABEL TOTAL
{
  python3 - "$@" <<'EOF' || fail "progress lines of $2: $(cat "$1")"
import json, sys
path, label, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
assert lines, "no JSON lines"
last_done = -1
for l in lines:
    j = json.loads(l)
    assert j["progress"] == label, j
    assert j["total"] == total, j
    assert last_done <= j["done"] <= total, j
    last_done = j["done"]
j = json.loads(lines[-1])
assert j.get("finished") is True and j["done"] == total and j["percent"] == 100, j
assert sum(1 for l in lines if "finished" in l) == 1
EOF
}
v image import "$src" p1 --progress json 2>"$TEST_DIR/p1.err" >/dev/null
check_progress "$TEST_DIR/p1.err" "import p1" $((16 * M))
v image export p1 "$TEST_DIR/p1.raw" --progress json 2>"$TEST_DIR/p1x.err"
check_progress "$TEST_DIR/p1x.err" "export p1" $((16 * M))
cmp "$src" "$TEST_DIR/p1.raw" || fail "p1 differs"
v image export p1 "$TEST_DIR/p1b.raw" --progress bar 2>"$TEST_DIR/bar.err"
grep -q "export p1 \[#\{30\}\] 100%" "$TEST_DIR/bar.err" ||
  fail "no finished bar: $(cat -v "$TEST_DIR/bar.err")"
# Not a terminal, no option: nothing on stderr.
v image export p1 "$TEST_DIR/p1c.raw" 2>"$TEST_DIR/quiet.err"
[ ! -s "$TEST_DIR/quiet.err" ] || fail "progress without a terminal: $(cat "$TEST_DIR/quiet.err")"
expect_status 2 "image import: --progress: expected auto, bar, json or none, not 'x'" \
  v image import "$src" p2 --progress x

# ---- threads ---------------------------------------------------------------------
big=$TEST_DIR/big.raw
head -c $((24 * M + 12345)) /dev/urandom >"$big"
v image import --object-size 1M "$big" t1 --threads 1
v image export t1 "$TEST_DIR/t1.raw" --threads 1
cmp "$big" "$TEST_DIR/t1.raw" || fail "one thread: differs"
v image import --object-size 1M "$big" t16 --threads 16
v image export t16 "$TEST_DIR/t16.raw" --threads 16
cmp "$big" "$TEST_DIR/t16.raw" || fail "16 threads: differs"
expect_status 2 "image export: --threads: invalid number '0' \(1 to 64\)" \
  v image export t1 "$TEST_DIR/never.raw" --threads 0

# ---- SIGINT ------------------------------------------------------------------------
# stop_when CMD...: runs CMD in the background, stops it (SIGSTOP) once
# COND (a shell function) is true, sends SIGINT and lets it go on.  Its
# exit status in copy_rc, stderr in $TEST_DIR/int.err.
stop_when ()
{
  local cond=$1 i pid
  shift
  "$@" 2>"$TEST_DIR/int.err" &
  pid=$!
  cleanup_fn "kill -9 $pid 2>/dev/null"
  for ((i = 0; i < 3000; i++)); do
    $cond && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -STOP "$pid" 2>/dev/null ||
    fail "$* ended before it could be stopped: $(cat "$TEST_DIR/int.err")"
  kill -INT "$pid"
  kill -CONT "$pid"
  copy_rc=0
  wait "$pid" || copy_rc=$?
}
huge=$TEST_DIR/huge.raw
head -c $((128 * M)) /dev/urandom >"$huge"
data_objects ()
{
  case "$VBK_TEST_STORE_KIND" in
    local) { find "${S#local:}/obj" -name 'vbk_data.*' 2>/dev/null || true; } | wc -l ;;
    rados)
      local ns=${S#rados:"$VBK_TEST_POOL"/}
      ns=${ns%%\?*}
      rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" ls | grep -c '^vbk_data\.' || true ;;
  esac
}
base=$(data_objects)
some_objects () { [ "$(data_objects)" -ge $((base + 4)) ]; }
stop_when some_objects "$VBK_BIN/vbk" --store "$S" image import --object-size 64K "$huge" int1
[ "$copy_rc" -eq 1 ] || fail "interrupted import: exit $copy_rc: $(cat "$TEST_DIR/int.err")"
grep -q "image import: interrupted" "$TEST_DIR/int.err" ||
  fail "interrupted import: $(cat "$TEST_DIR/int.err")"
v image ls --json | json_check '"int1" not in [i["name"] for i in d]'

v image import --object-size 256K "$huge" int2
mkdir "$TEST_DIR/x"
# Some data in the temporary file (it is one hole at first).
some_bytes () { [ "$(du -k "$TEST_DIR"/x/.int.raw.vbk-* 2>/dev/null | cut -f1)" -ge 256 ] 2>/dev/null; }
stop_when some_bytes "$VBK_BIN/vbk" --store "$S" image export int2 "$TEST_DIR/x/int.raw" --threads 2
[ "$copy_rc" -eq 1 ] || fail "interrupted export: exit $copy_rc: $(cat "$TEST_DIR/int.err")"
grep -q "image export: interrupted" "$TEST_DIR/int.err" ||
  fail "interrupted export: $(cat "$TEST_DIR/int.err")"
[ -z "$(ls -A "$TEST_DIR/x")" ] || fail "an interrupted export left files: $(ls -A "$TEST_DIR/x")"

# ---- a block device ------------------------------------------------------------------
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null &&
   dev_file=$TEST_DIR/dev.img && head -c $((16 * M)) /dev/urandom >"$dev_file" &&
   dev=$(losetup -f --show "$dev_file" 2>/dev/null); then
  cleanup_fn "losetup -d $dev"
  # Garbage everywhere before: the holes and zero blocks must be zeroed.
  v image export disk "$dev" --json >"$TEST_DIR/dev.json"
  cmp "$src" "$dev" || fail "export to $dev differs"
  v image import "$dev" fromdev
  [ "$(objects fromdev)" -eq 2 ] || fail "import from $dev: $(objects fromdev) objects, not 2"
  v image export fromdev "$TEST_DIR/fromdev.raw"
  cmp "$src" "$TEST_DIR/fromdev.raw" || fail "import from $dev differs"
else
  echo "image-copy: no loop device (not root, or no losetup): block device part skipped"
fi

echo "image-copy ($VBK_TEST_STORE_KIND): OK"
