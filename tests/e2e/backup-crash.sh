#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-crash.sh - kill -9 at random points, once per store backend
# (VBK_TEST_BACKENDS):
#   20 rounds of "vbk backup run" killed at a random moment while the
#   image changes through vbk-blockd: after each, the repository verifies
#   clean, and every 5 rounds a backup runs to the end and restores
#   byte-equal to its snapshot;
#   10 rounds of "vbk backup gc" killed at a random moment after a prune:
#   nothing a backup uses is lost (verify clean, every backup restores);
#   at the end gc cleans up what the killed runs left (their catalog
#   entries and chunks), and the next backup is still incremental.
# Locks of killed processes run out after VBK_BACKUP_LOCK_MS (5 s here,
# not the default 30 s).  Not shorter: a live backup renews its writer
# lock every quarter of that, and on a loaded machine a renewal on RADOS
# took longer than the 750 ms a lock of 1 s leaves it ("lost the writer
# lock").

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires nbdsh
requires cmp

M=$((1024 * 1024))
store=$(new_store)
repo=$(new_store)
lock_ms=5000
export VBK_REPO=$repo VBK_BACKUP_LOCK_MS=$lock_ms
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }
py_nbd=$(python_with_nbd)

nbd_do ()
{
  PATH=/usr/bin:$PATH "$py_nbd" - "$(host_uri A d)" "$1" <<'PY' || fail "nbd: $1"
import nbd, os, sys, random
h = nbd.NBD()
h.connect_uri(sys.argv[1])
M = 1 << 20
exec(sys.argv[2])
h.flush()
h.shutdown()
PY
}

# full_backup: a backup to the end; checks its restore against its snapshot.
full_backup ()
{
  local id snap
  b run d --json --cbt-sample 2 >"$TEST_DIR/run.json" || fail "backup run: $(cat "$TEST_DIR/run.json")"
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TEST_DIR/run.json")
  snap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["snapshot"])' "$TEST_DIR/run.json")
  v image export --force "d@$snap" "$TEST_DIR/snap.raw"
  b restore "$id" --to-file "$TEST_DIR/out.raw" --force || fail "restore $id"
  cmp "$TEST_DIR/out.raw" "$TEST_DIR/snap.raw" || fail "restore of $id differs from its snapshot"
}

verify_clean ()
{
  b verify >"$TEST_DIR/v.out" 2>&1 || fail "verify after $1: $(cat "$TEST_DIR/v.out")"
}

b init --chunk-size 64K >/dev/null
v image create d --size 8M
start_host A
nbd_do 'h.pwrite(os.urandom(6 * M), 0)'
full_backup

killed=0
for ((round = 1; round <= 20; round++)); do
  nbd_do 'for i in range(4): h.pwrite(os.urandom(64 * 1024), random.randrange(0, 8 * M - 65536))'
  args=(run d)
  [ $((round % 3)) = 0 ] && args+=(--full)
  "$VBK_BIN/vbk" --store "$store" backup "${args[@]}" >/dev/null 2>&1 &
  pid=$!
  sleep "$((RANDOM % 13 / 10)).$((RANDOM % 10))"
  if kill -9 "$pid" 2>/dev/null; then killed=$((killed + 1)); fi
  wait "$pid" 2>/dev/null || true
  verify_clean "a backup killed in round $round"
  [ $((round % 5)) = 0 ] && full_backup
done
echo "backup run: $killed of 20 runs killed mid-way; repository clean after each"

# ---- gc killed at random points --------------------------------------------------------
for ((round = 1; round <= 10; round++)); do
  nbd_do 'h.pwrite(os.urandom(256 * 1024), random.randrange(0, 8 * M - 262144))'
  b run d >/dev/null || fail "backup in gc round $round"
  b prune d --keep-last 2 >/dev/null || fail "prune"
  "$VBK_BIN/vbk" --store "$store" backup gc --clock-skew 0 >/dev/null 2>&1 &
  pid=$!
  sleep "0.$((RANDOM % 30))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  verify_clean "gc killed in round $round"
  for id in $(b ls --json | python3 -c 'import json,sys; print(" ".join(e["id"] for e in json.load(sys.stdin)))'); do
    b restore "$id" --to-file "$TEST_DIR/out.raw" --force >/dev/null || fail "restore $id after a killed gc"
  done
done

# ---- Cleanup: what the killed runs left goes; the chain stays incremental ------------------
# Every killed process's locks have run out: each was renewed last
# before its process was killed, so a lock's time after that suffices.
sleep $((lock_ms / 1000 + 1))
b gc --clock-skew 0 --json >"$TEST_DIR/gc.json" || fail "final gc"
python3 - "$TEST_DIR/gc.json" <<'PY' || fail "final gc: $(cat "$TEST_DIR/gc.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["running_backups"] == 0, r
assert r["chunks"] == r["referenced"] + r["removed"], r
PY
verify_clean "the final gc"
full_backup
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; assert not r["full"], r' "$TEST_DIR/run.json" ||
  fail "not incremental at the end: $(cat "$TEST_DIR/run.json")"
echo "crash rounds on $VBK_TEST_STORE_KIND: OK"
