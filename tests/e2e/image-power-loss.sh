#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# image-power-loss.sh - an unclean shutdown of the machine under
# vbk-blockd on the local store, played with VBK_TEST_BOOT_ID: blockd
# ("boot A") writes to an image between two backups and is killed with
# SIGKILL; the test then takes what a power loss may take from metadata
# written without a sync (the live change log emptied, a written object's
# map byte cleared) while the data stays.  The next open ("boot B")
# rebuilds the map and resets the change tracking: `vbk backup run` reads
# the whole image and says why, its restore equals its snapshot (the
# object whose map byte was lost included), `vbk diff` says the tracking
# was reset, and the backup after it is incremental again.  A kill -9 in
# the same boot (a process crash) keeps the next backup incremental.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires nbdsh
requires cmp

K=1024
M=$((1024 * 1024))
store=$(new_store)
repo=$(new_store)
root=${store#local:}
export VBK_REPO=$repo
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }
py_nbd=$(python_with_nbd)

# nbd_do CODE: runs CODE with h connected to "d" on host A; FLUSH=0
# leaves out the final flush.
nbd_do ()
{
  PATH=/usr/bin:$PATH FLUSH=${FLUSH:-1} "$py_nbd" - "$(host_uri A d)" "$1" <<'PY' || fail "nbd: $1"
import nbd, os, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
K, M = 1 << 10, 1 << 20
exec(sys.argv[2])
if os.environ["FLUSH"] == "1":
    h.flush()
h.shutdown()
PY
}

# backup_check WANT_FULL WHAT: a backup run; full or not as WANT_FULL
# (true/false); its restore equals its snapshot.  Its JSON in run.json,
# its stderr in run.err.
backup_check ()
{
  local id snap
  b run d --json >"$TEST_DIR/run.json" 2>"$TEST_DIR/run.err" ||
    fail "backup run ($2): $(cat "$TEST_DIR/run.err")"
  python3 - "$TEST_DIR/run.json" "$1" <<'PY' || fail "backup ($2): $(cat "$TEST_DIR/run.json")"
import json, sys
r = json.load(open(sys.argv[1]))[0]
assert r["full"] == (sys.argv[2] == "true"), r
PY
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TEST_DIR/run.json")
  snap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["snapshot"])' "$TEST_DIR/run.json")
  v image export --force "d@$snap" "$TEST_DIR/snap.raw"
  b restore "$id" --to-file "$TEST_DIR/out.raw" --force >/dev/null || fail "restore $id"
  cmp "$TEST_DIR/out.raw" "$TEST_DIR/snap.raw" || fail "restore of $id ($2) differs from its snapshot"
  echo "$snap" >"$TEST_DIR/last-snap"
}

b init --chunk-size 256K >/dev/null
v image create d --size 16M --object-size 256K >/dev/null
id=$(basename "$(ls "$root"/obj/vbk_header.* | head -1)")
id=${id#vbk_header.}
export VBK_TEST_BOOT_ID=boot-A

start_host A
nbd_do 'h.pwrite(os.urandom(4 * M), 0)'
backup_check true "the first"
nbd_do 'h.pwrite(os.urandom(64 * K), 5 * M)'
backup_check false "an incremental"

# ---- A process crash (same boot): nothing is rebuilt --------------------
# An idle client keeps the image open, as a VM does, while blockd dies.
keep_open A d
nbd_do 'h.pwrite(b"p" * 4096, 6 * M + 4096)'
kill -9 "$pid_A"
wait "$pid_A" 2>/dev/null || true
start_host A
backup_check false "after a kill -9 in the same boot"
grep -q "reset" "$TEST_DIR/run.err" && fail "CBT reset after a process crash: $(cat "$TEST_DIR/run.err")"
v snap create d@pre >/dev/null || fail "snap create pre"

# ---- A power loss ---------------------------------------------------------
keep_open A d
# First writes to objects 40 (12 MiB 256 K objects: 10 MiB) and 48, no
# flush; the machine goes down.
FLUSH=0 nbd_do 'h.pwrite(b"L" * 8192, 10 * M); h.pwrite(b"W" * 4096, 12 * M + 8192)'
kill -9 "$pid_A"
wait "$pid_A" 2>/dev/null || true
# What the power loss took: the live change log, and the map byte of
# object 40 (10 MiB / 256 KiB); the data stayed.
: >"$root/obj/vbk_changes.$id"
printf '\0' | dd of="$root/obj/vbk_object_map.$id" bs=1 seek=40 conv=notrunc status=none

export VBK_TEST_BOOT_ID=boot-B
start_host A
backup_check true "after a power loss"
grep -q "changed-block tracking was reset" "$TEST_DIR/run.err" ||
  fail "backup run did not say why it read everything: $(cat "$TEST_DIR/run.err")"
python3 - "$TEST_DIR/run.json" <<'PY' || fail "full_reason: $(cat "$TEST_DIR/run.json")"
import json, sys
r = json.load(open(sys.argv[1]))[0]
assert "reset" in r["full_reason"], r
PY
# The data written before the power loss is in the backup.
python3 - "$TEST_DIR/out.raw" <<'PY' || fail "the restore lacks the writes made before the power loss"
import sys
d = open(sys.argv[1], "rb").read()
M = 1 << 20
assert d[10 * M:10 * M + 8192] == b"L" * 8192
assert d[12 * M + 8192:12 * M + 12288] == b"W" * 4096
PY
v diff d --from pre >/dev/null 2>"$TEST_DIR/diff.err" || fail "vbk diff: $(cat "$TEST_DIR/diff.err")"
grep -q "changed-block tracking was reset" "$TEST_DIR/diff.err" ||
  fail "vbk diff did not say the tracking was reset: $(cat "$TEST_DIR/diff.err")"

nbd_do 'h.pwrite(os.urandom(64 * K), 2 * M)'
backup_check false "the next one"
stop_blockd pid_A
echo "power loss on the local store: map rebuilt, backup full and said why, then incremental again"
