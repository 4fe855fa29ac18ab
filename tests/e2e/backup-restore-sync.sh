#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-restore-sync.sh - "vbk backup restore" writes buffered and makes
# the result durable with one flush at its end, and a failure of that
# flush fails the restore (local store).
#
# vbk runs with the sync interposer (tests/shim/syncshim.c, LD_PRELOAD)
# driven by a control file; it logs every sync of the files it matches,
# and fails them when told to.  The image: 8 MiB in 1 MiB objects,
# backed up in 64 KiB chunks (128 chunks, 8 objects).
#   --to-file: the restored file is synced exactly once, whatever the
#     number of chunks; when that sync fails (EIO), the restore fails
#     with one clear line, and neither the file nor its temporary file is
#     left (over an existing file with --force: the old file is kept).
#   --to IMAGE: no data object is synced more than once (no sync per
#     chunk); when those syncs fail, the restore fails and the new image
#     is removed.
# After each failure, the same restore without the fault gives the
# backed-up bytes.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp
requires_syncshim

store=local:$(mktemp -d "$TEST_DIR/store.XXXXXX")
export VBK_REPO=local:$(mktemp -d "$TEST_DIR/repo.XXXXXX")
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }
syncs () { grep -c " start " "$SYNC_LOG" || true; }

head -c $((8 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
v image import --object-size 1M "$TEST_DIR/a.raw" d || fail "import"
b init --chunk-size 64K >/dev/null || fail "init"
id=$(b run d --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

# ---- --to-file -----------------------------------------------------------------
mkdir "$TEST_DIR/rs"
syncshim "/rs/" 0 b restore "$id" --to-file "$TEST_DIR/rs/r.raw" ||
  fail "restore --to-file"
cmp "$TEST_DIR/rs/r.raw" "$TEST_DIR/a.raw" || fail "restore --to-file differs"
n=$(grep " start " "$SYNC_LOG" | grep -c "/rs/\.r\.raw\.vbk-" || true)
[ "$n" = 1 ] || fail "the restored file was synced $n times, expected once: $(cat "$SYNC_LOG")"
echo "restore --to-file: the file synced once for 128 chunks (syncs under rs/: $(syncs))"

syncshim "/rs/" 5 expect_status 1 "rs/\.r2\.raw\.vbk-[^:]*: fsync: Input/output error" \
  b restore "$id" --to-file "$TEST_DIR/rs/r2.raw"
grep -q " fail .*/rs/\.r2\.raw\.vbk-" "$SYNC_LOG" || fail "no failed sync: $(cat "$SYNC_LOG")"
[ "$(ls -A "$TEST_DIR/rs")" = r.raw ] ||
  fail "a failed restore left files behind: $(ls -A "$TEST_DIR/rs")"
echo "old" >"$TEST_DIR/rs/r2.raw"
syncshim "/rs/" 5 expect_status 1 "fsync: Input/output error" \
  b restore "$id" --to-file "$TEST_DIR/rs/r2.raw" --force
[ "$(cat "$TEST_DIR/rs/r2.raw")" = old ] || fail "a failed restore --force replaced the file"
[ "$(ls -A "$TEST_DIR/rs" | sort | tr '\n' ' ')" = "r.raw r2.raw " ] ||
  fail "a failed restore --force left files behind: $(ls -A "$TEST_DIR/rs")"
b restore "$id" --to-file "$TEST_DIR/rs/r2.raw" --force || fail "restore --force after the fault"
cmp "$TEST_DIR/rs/r2.raw" "$TEST_DIR/a.raw" || fail "restore --force after the fault differs"
echo "restore --to-file: a failed sync at the end fails it, nothing left behind"

# ---- --to IMAGE ----------------------------------------------------------------
syncshim "/obj/vbk_data." 0 b restore "$id" --to d2 || fail "restore --to d2"
awk '$2 == "start" { n[$3]++ } END { for (p in n) if (n[p] > 1) { print p, n[p]; bad = 1 } exit bad }' \
  "$SYNC_LOG" || fail "a data object was synced more than once: $(cat "$SYNC_LOG")"
n=$(syncs)
[ "$n" -le 8 ] || fail "$n syncs of data objects for 8 objects"
v image export --force d2 "$TEST_DIR/d2.raw" || fail "export d2"
cmp "$TEST_DIR/d2.raw" "$TEST_DIR/a.raw" || fail "restore --to d2 differs"
echo "restore --to IMAGE: $n data object syncs for 128 chunks in 8 objects"

syncshim "/obj/vbk_data." 5 expect_status 1 "Input/output error" b restore "$id" --to d3
grep -q " fail .*/obj/vbk_data\." "$SYNC_LOG" || fail "no failed sync: $(cat "$SYNC_LOG")"
v image ls | grep -qw d3 && fail "a failed restore left image d3"
b restore "$id" --to d3 || fail "restore --to d3 after the fault"
v image export --force d3 "$TEST_DIR/d3.raw" || fail "export d3"
cmp "$TEST_DIR/d3.raw" "$TEST_DIR/a.raw" || fail "restore --to d3 differs"
echo "restore --to IMAGE: a failed sync at the end fails it, the image is removed"
echo "backup-restore-sync: ok"
