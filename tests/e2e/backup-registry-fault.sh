#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-registry-fault.sh - a failed group commit of the chunk registry
# during "vbk backup run", once per store backend (VBK_TEST_BACKENDS).
#
# A backup registers each chunk it stores in the registry
# (vbk_backup_chunks) before it writes the chunk, and the registry's
# writers share one store_meta_set per batch (backup/chunk.c).  Here the
# fault: store on the repository fails the Nth store_meta_set
# (call=meta_set) with EIO or ENOSPC, on the first batch and on a later
# one.  Each time: the run fails with exit 1 and one error line naming
# the chunk, the registry, the failed call and the errno (before, the
# chunk lock's release wiped the message: "backup run: Input/output
# error"), no backup is listed for it, the repository verifies clean,
# and the next run (no fault) succeeds and restores byte-equal to the
# image.  The image has 64 new chunks of 64 KiB per round; a batch
# holds at most one key per worker (8), so a run makes at least 8
# batches and every N used here is reached.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp

store=$(new_store)
repo=$(new_store)
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }
count () { b ls --repo "$repo" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

b init "$repo" --chunk-size 64K >/dev/null || fail "init"
head -c $((4 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
v image import "$TEST_DIR/a.raw" d || fail "import"
n=0
for c in "EIO 1 Input/output error" "ENOSPC 1 No space left on device" \
         "EIO 3 Input/output error" "ENOSPC 5 No space left on device"; do
  read -r err nth text <<<"$c"
  # New data in every chunk: every chunk of the run is registered anew.
  head -c $((4 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
  v image rm d && v image import "$TEST_DIR/a.raw" d || fail "reimport"

  rc=0
  b run d --repo "fault:op=meta,call=meta_set,err=$err,nth=$nth@$repo" \
    >"$TEST_DIR/run.out" 2>"$TEST_DIR/run.err" || rc=$?
  [ "$rc" = 1 ] ||
    fail "$err at meta_set #$nth: exit $rc, expected 1: $(cat "$TEST_DIR/run.err")"
  [ "$(wc -l <"$TEST_DIR/run.err")" = 1 ] ||
    fail "$err at meta_set #$nth: not one error line: $(cat "$TEST_DIR/run.err")"
  grep -q "registry: .*meta_set: vbk_backup_chunks: .*$text" "$TEST_DIR/run.err" ||
    fail "$err at meta_set #$nth: unclear error: $(cat "$TEST_DIR/run.err")"
  echo "$err at meta_set #$nth: $(cat "$TEST_DIR/run.err")"
  [ "$(count)" = "$n" ] || fail "$err at meta_set #$nth: the failed run is listed"
  b verify --repo "$repo" >"$TEST_DIR/verify.out" 2>&1 ||
    fail "$err at meta_set #$nth: verify: $(cat "$TEST_DIR/verify.out")"

  b run d --repo "$repo" --json >"$TEST_DIR/run.json" ||
    fail "$err at meta_set #$nth: the next run failed"
  n=$((n + 1))
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TEST_DIR/run.json")
  b restore "$id" --repo "$repo" --to-file "$TEST_DIR/r.raw" --force ||
    fail "$err at meta_set #$nth: restore of the next run"
  cmp "$TEST_DIR/r.raw" "$TEST_DIR/a.raw" ||
    fail "$err at meta_set #$nth: the restore differs from the image"
done
[ "$(count)" = "$n" ] || fail "$(count) backups listed, expected $n"
b verify --repo "$repo" >/dev/null || fail "verify at the end"
echo "backup-registry-fault: ok"
