#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-import-crash.sh - an import that dies leaves no normal-looking
# image, once per store backend (VBK_TEST_BACKENDS).  An import is
# stopped (SIGSTOP) once some data objects exist: the image is listed
# and shown as incomplete, not served by vbk-blockd nor exported, and a
# second import onto the name, or rm, is refused while the first may
# still run.
# After kill -9 of the first, importing again (the same source, then a
# new one) replaces the incomplete image and the result is byte for byte
# the source; and rm removes an incomplete image.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-io
requires python3
requires cmp
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados

M=$((1 << 20))
store=$(new_store)
v () { vbk --store "$store" "$@"; }

# data_objects: how many data objects the store holds.
data_objects ()
{
  case "$VBK_TEST_STORE_KIND" in
    local) { find "${store#local:}/obj" -name 'vbk_data.*' 2>/dev/null || true; } | wc -l ;;
    rados) rados_of "$store" ls | grep -c '^vbk_data\.' || true ;;
  esac
}
field () { v image ls --json | python3 -c 'import json,sys; print([i[sys.argv[2]] for i in json.load(sys.stdin) if i["name"] == sys.argv[1]][0])' "$1" "$2"; }

src=$TEST_DIR/src.raw
head -c $((96 * M)) /dev/urandom >"$src"
src2=$TEST_DIR/src2.raw
head -c $((40 * M)) /dev/urandom >"$src2"
truncate -s 100M "$src2"

# start_import NAME: an import of $src into NAME, stopped once it has
# written some data objects; its pid in import_pid.
start_import ()
{
  local i base
  base=$(data_objects)
  "$VBK_BIN/vbk" --store "$store" image import --object-size 64K "$src" "$1" \
    2>"$TEST_DIR/import.err" &
  import_pid=$!
  cleanup_fn "kill -9 $import_pid 2>/dev/null"
  for ((i = 0; i < 2000; i++)); do
    [ "$(data_objects)" -ge $((base + 4)) ] && break
    kill -0 "$import_pid" 2>/dev/null || break
    sleep 0.01
  done
  kill -STOP "$import_pid" 2>/dev/null ||
    fail "the import ended before it could be stopped: $(cat "$TEST_DIR/import.err")"
  [ "$(data_objects)" -ge $((base + 4)) ] || fail "the import wrote no data objects"
}
kill_import ()
{
  kill -9 "$import_pid"
  wait "$import_pid" 2>/dev/null || true
}

# ---- a stopped import -----------------------------------------------------------
start_import disk
[ "$(field disk state)" = incomplete ] || fail "ls: state $(field disk state)"
v image ls | grep -Eq "^disk +96 MiB +64 KiB +incomplete$" ||
  fail "ls does not show disk as incomplete: $(v image ls)"
v image info disk >"$TEST_DIR/info"
grep -Eq "^state: +incomplete \(import did not finish" "$TEST_DIR/info" ||
  fail "info: $(cat "$TEST_DIR/info")"
v image info disk --json | json_check 'd["state"] == "incomplete"'
expect_status 1 "image export: image 'disk' is incomplete \(import did not finish" \
  v image export disk "$TEST_DIR/never.raw"
[ ! -e "$TEST_DIR/never.raw" ] || fail "export of an incomplete image left a file"
# A second import while the first may still run: refused.
expect_status 1 "image import: image 'disk' is being imported" \
  v image import "$src2" disk
# Nor removed under it, unless forced.
expect_status 1 "image rm: image 'disk' is being imported by process $import_pid" \
  v image rm disk
# Not served.
start_blockd pid_a "$TEST_DIR/a.sock"
qemu-io -f raw -r -c "read 0 4k" "nbd+unix:///disk?socket=$TEST_DIR/a.sock" \
  >"$TEST_DIR/qio.out" 2>&1 && fail "an incomplete image was served"
grep -q "incomplete" "$TEST_DIR/qio.out" || fail "no reason given: $(cat "$TEST_DIR/qio.out")"
nbdinfo --list "nbd+unix:///?socket=$TEST_DIR/a.sock" >"$TEST_DIR/list.out" 2>&1 || true
# (nbdinfo --list also opens each listed export: a listed incomplete
# image shows up as an error naming it.)
grep -q 'disk' "$TEST_DIR/list.out" &&
  fail "an incomplete image is listed by NBD_OPT_LIST: $(cat "$TEST_DIR/list.out")"

# ---- killed: a new import replaces it -------------------------------------------
kill_import
[ "$(field disk state)" = incomplete ] || fail "after kill -9: state $(field disk state)"
v image import --object-size 64K "$src" disk 2>"$TEST_DIR/import2.err" ||
  fail "re-import failed: $(cat "$TEST_DIR/import2.err")"
grep -q "replacing 'disk', left incomplete" "$TEST_DIR/import2.err" ||
  fail "re-import did not say it replaced: $(cat "$TEST_DIR/import2.err")"
[ "$(field disk state)" = ok ] || fail "after re-import: state $(field disk state)"
v image export disk "$TEST_DIR/out.raw"
cmp "$src" "$TEST_DIR/out.raw" || fail "re-imported image differs from the source"
qemu-io -f raw -r -c "read 0 4k" "nbd+unix:///disk?socket=$TEST_DIR/a.sock" \
  >"$TEST_DIR/qio.out" 2>&1 || fail "the re-imported image is not served: $(cat "$TEST_DIR/qio.out")"
nbdinfo --list "nbd+unix:///?socket=$TEST_DIR/a.sock" | grep -q 'export="disk"' ||
  fail "the re-imported image is not listed"
rm -f "$TEST_DIR/out.raw"

# Killed again; imported from another source (another size).
start_import other
kill_import
v image import "$src2" other
v image info other --json | json_check 'd["state"] == "ok" and d["size"] == 100 << 20 and d["object_size"] == 4 << 20'
v image export other "$TEST_DIR/out2.raw"
cmp "$src2" "$TEST_DIR/out2.raw" || fail "import from a new source differs"

# ---- killed: rm removes it ------------------------------------------------------------
start_import third
kill_import
v image rm third
v image ls --json | json_check '"third" not in [i["name"] for i in d]'
v image import "$src2" third
v image export third "$TEST_DIR/out3.raw"
cmp "$src2" "$TEST_DIR/out3.raw" || fail "third differs"

stop_blockd pid_a
echo "image-import-crash ($VBK_TEST_STORE_KIND): OK"
