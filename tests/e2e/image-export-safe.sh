#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-export-safe.sh - "vbk image export" never destroys an existing
# file, once per store backend (VBK_TEST_BACKENDS): an existing target is
# refused without --force; with --force, an export that fails part way
# (a read error from the fault: store) leaves the old file byte for byte
# and no temporary file beside it; a successful one replaces it whole.
# A target that is not a regular file (/dev/stdout) is written in place.
# The exported file is synced once, not once by the copy and again
# before its rename (the sync interposer, tests/shim/syncshim.c, counts).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp
requires_syncshim

M=$((1 << 20))
S=$(new_store)
v () { vbk --store "$S" "$@"; }

src=$TEST_DIR/src.raw
head -c $((16 * M)) /dev/urandom >"$src"
v image import "$src" disk

out=$TEST_DIR/dst/target.raw
mkdir "$TEST_DIR/dst"
head -c $((3 * M)) /dev/urandom >"$TEST_DIR/old.raw"
cp "$TEST_DIR/old.raw" "$out"

# No --force: refused, untouched.
expect_status 1 "image export: .*target.raw: file exists.*--force" \
  v image export disk "$out"
cmp "$TEST_DIR/old.raw" "$out" || fail "a refused export changed the target"

# A read error part way through (the 3rd object read fails): the old
# content survives, and no temporary file is left.
for nth in 1 3; do
  expect_status 1 "image export: .*Input/output error" \
    vbk --store "fault:op=read,err=EIO,nth=$nth@$S" image export disk "$out" --force
  cmp "$TEST_DIR/old.raw" "$out" || fail "a failed export (nth=$nth) destroyed the target"
  [ "$(ls -A "$TEST_DIR/dst")" = target.raw ] ||
    fail "a failed export left files behind: $(ls -A "$TEST_DIR/dst")"
done

# A new target that fails: nothing at all is left.
expect_status 1 "image export: .*Input/output error" \
  vbk --store "fault:op=read,err=EIO,nth=2@$S" image export disk "$TEST_DIR/dst/new.raw"
[ "$(ls -A "$TEST_DIR/dst")" = target.raw ] ||
  fail "a failed export of a new file left files behind: $(ls -A "$TEST_DIR/dst")"

# With --force and no fault: replaced whole, same permissions as a new file.
v image export disk "$out" --force
cmp "$src" "$out" || fail "export --force did not replace the target"
[ "$(ls -A "$TEST_DIR/dst")" = target.raw ] || fail "leftovers: $(ls -A "$TEST_DIR/dst")"
[ "$(stat -c %a "$out")" = "$(printf %o $((0666 & ~$(umask))))" ] ||
  fail "replaced target has mode $(stat -c %a "$out")"

# Synced once: the copy's flush; the rename is made durable by the
# directory's sync.
syncshim /dst 0 vbk --store "$S" image export disk "$out" --force ||
  fail "export under the interposer"
cmp "$src" "$out" || fail "export under the interposer differs"
n=$(grep -c " start .*/dst/\.target\.raw\.vbk-" "$SYNC_LOG" || true)
[ "$n" = 1 ] || fail "the exported file was synced $n times, expected once: $(cat "$SYNC_LOG")"
n=$(grep -c " start .*/dst$" "$SYNC_LOG" || true)
[ "$n" = 1 ] || fail "the target's directory was synced $n times, expected once: $(cat "$SYNC_LOG")"

# A relative target in the current directory.
(cd "$TEST_DIR/dst" && vbk --store "$S" image export disk rel.raw)
cmp "$src" "$TEST_DIR/dst/rel.raw" || fail "relative export differs"

# Not a regular file: in place, as before (stdout redirected to a file).
v image export disk /dev/stdout >"$TEST_DIR/stdout.raw"
cmp "$src" "$TEST_DIR/stdout.raw" || fail "export to /dev/stdout differs"

echo "image-export-safe ($VBK_TEST_STORE_KIND): OK"
