#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-roundtrip.sh - "vbk backup" end to end, once per store backend
# (VBK_TEST_BACKENDS: the images and the repository both on it), with
# the image written by a real NBD client through vbk-blockd:
#   backups of an image with random data, text, holes, discards and a
#   resize between backups; every backup restored (to a file and to a new
#   image) is byte-equal to its snapshot (exported when it was taken);
#   an incremental after k scattered writes reads at most k chunks, counted
#   by the backup and by the fault: store's read counter; it stays
#   incremental after kill -9 of vbk-blockd and after a lease hand-off to
#   another blockd; the CBT self-check runs; a backup whose base snapshot
#   is gone says so and reads everything; dedup across images; a flipped
#   bit in a stored chunk: verify names the chunk and the backups using
#   it, restore of an affected backup fails naming it, the others restore,
#   the next backup writes the chunk again; in-place restore after a 1%
#   change writes at most 2% of the image, refuses while the lease is held
#   and works with --force; prune, protect, rm and gc.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires nbdsh
requires cmp
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados

K=1024
M=$((1024 * 1024))
CS=$((128 * K))                 # chunk size = 1/32 of a 4 MiB object
store=$(new_store)
repo=$(new_store)
v () { vbk --store "$store" "$@"; }
export VBK_REPO=$repo
b () { vbk --store "$store" backup "$@"; }
py_nbd=$(python_with_nbd)

# nbd_do HOST PYTHON: runs PYTHON with h connected to image d on HOST.
nbd_do ()
{
  PATH=/usr/bin:$PATH "$py_nbd" - "$(host_uri "$1" d)" "$2" <<'PY' || fail "nbd write on $1: $2"
import nbd, os, sys, random
h = nbd.NBD()
h.connect_uri(sys.argv[1])
M = 1 << 20
exec(sys.argv[2])
h.flush()
h.shutdown()
PY
}

# run_backup [ARGS...]: backs up d, leaving the JSON result in $TEST_DIR/run.json
# and the id in $id; exports the backup's snapshot to $TEST_DIR/snap.$id.
run_backup ()
{
  b run d --json --cbt-sample 0 "$@" >"$TEST_DIR/run.json" || fail "backup run $*: $(cat "$TEST_DIR/run.json")"
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TEST_DIR/run.json")
  snap=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["snapshot"])' "$TEST_DIR/run.json")
  v image export --force "d@$snap" "$TEST_DIR/snap.$id" || fail "export d@$snap"
  ids+=("$id")
}
# field KEY: from $TEST_DIR/run.json
field () { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0][sys.argv[2]])' "$TEST_DIR/run.json" "$1"; }

ids=()
b init --chunk-size 128K >/dev/null
v image create d --size 48M

# ---- Backup 1: random data, text, holes --------------------------------------------
start_host A
nbd_do A '
h.pwrite(os.urandom(3 * M), 0)
h.pwrite((b"the quick brown fox jumps over the lazy dog\n" * 50000)[:2 * M], 10 * M)
h.pwrite(os.urandom(512 * 1024), 30 * M + 4096)'
run_backup
[ "$(field full)" = True ] || fail "first backup not full"
echo "backup 1: $(field chunks_read) chunks read, $(field bytes_stored) bytes stored"

# ---- Backup 2: k scattered writes -> at most k chunks read ---------------------
nbd_do A '
for i, off in enumerate([1 * M + 5000, 7 * M, 12 * M + 300000, 20 * M, 41 * M + 9]):
    h.pwrite(os.urandom(4096), off)'
b run d --json --cbt-sample 0 --store "fault:@$store" >"$TEST_DIR/run-fault.json" || fail "backup via fault store"
python3 - "$TEST_DIR/run-fault.json" <<'PY' || fail "incremental read too much: $(cat "$TEST_DIR/run-fault.json")"
import json, sys
r = json.load(open(sys.argv[1]))[0]
CS = 128 * 1024
assert not r["full"], r
assert r["chunks_read"] <= 5, r
assert r["bytes_read"] <= 5 * CS, r
# What the store really returned: the chunks plus a little metadata.
assert r["store_bytes_read"] <= 5 * CS + 64 * 1024, r
print("incremental after 5 writes: %d chunks, %d bytes from the store" % (r["chunks_read"], r["store_bytes_read"]))
PY
cp "$TEST_DIR/run-fault.json" "$TEST_DIR/run.json"
id=$(field id); snap=$(field snapshot)
v image export --force "d@$snap" "$TEST_DIR/snap.$id"
ids+=("$id")

# ---- Backup 3: after kill -9 of blockd, writes through another host ---------------
nbd_do A 'h.pwrite(os.urandom(4096), 15 * M)'
kill -9 "$pid_A"
start_host B
nbd_do B 'h.pwrite(os.urandom(4096), 25 * M)'
run_backup --cbt-sample 3
[ "$(field full)" = False ] || fail "not incremental after kill -9 of blockd: $(cat "$TEST_DIR/run.json")"
[ "$(field cbt_checked)" = 3 ] || fail "CBT sample not checked: $(cat "$TEST_DIR/run.json")"
# A crash may over-report (whole objects) but never read everything.
[ "$(field chunks_read)" -le 64 ] || fail "too much read after a crash: $(cat "$TEST_DIR/run.json")"

# ---- Backup 4: after a lease hand-off between two live hosts ------------------------
start_host C
nbd_do B 'h.pwrite(os.urandom(4096), 2 * M)'
nbd_do C 'h.pwrite(os.urandom(4096), 33 * M)'
run_backup
[ "$(field full)" = False ] || fail "not incremental after a hand-off"
[ "$(field chunks_read)" -le 2 ] || fail "hand-off: too much read: $(cat "$TEST_DIR/run.json")"

# ---- Backup 5: discards and a resize -----------------------------------------------
nbd_do C 'h.trim(2 * M, 0); h.zero(1 * M, 10 * M)'
stop_blockd pid_B
stop_blockd pid_C
v image resize d --size 56M || fail "resize"
start_host A
nbd_do A 'h.pwrite(os.urandom(100000), 50 * M)'
run_backup
[ "$(field size)" = $((56 * M)) ] || fail "size after resize"

# ---- Restore every backup: byte-equal to its snapshot ---------------------------------
for id in "${ids[@]}"; do
  b restore "$id" --to-file "$TEST_DIR/out" --force || fail "restore $id"
  cmp "$TEST_DIR/out" "$TEST_DIR/snap.$id" || fail "restore of $id differs from its snapshot"
done
b restore "${ids[0]}" --to r1 --json >"$TEST_DIR/r.json" || fail "restore to a new image"
v image export --force r1 "$TEST_DIR/out"
cmp "$TEST_DIR/out" "$TEST_DIR/snap.${ids[0]}" || fail "restore to image differs"
# Sparse: zero chunks were not written.
python3 - "$TEST_DIR/r.json" <<'PY' || fail "restore wrote zeros: $(cat "$TEST_DIR/r.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["written"] < 8 * (1 << 20), r
PY
echo "restored ${#ids[@]} backups byte-equal to their snapshots"

# Only the newest backup's snapshot is left on the image.
[ "$(v snap ls d | grep -c vbkbk-)" = 1 ] || fail "old backup snapshots left: $(v snap ls d)"

# ---- A base snapshot gone: full read, said so -------------------------------------------
last_snap=$(field snapshot)
v snap rm "d@$last_snap"
b run d --cbt-sample 0 >"$TEST_DIR/out.txt" 2>"$TEST_DIR/err.txt" || fail "backup after snapshot removal"
grep -q "is gone: full read" "$TEST_DIR/err.txt" || fail "no word of the full read: $(cat "$TEST_DIR/err.txt")"
grep -q full "$TEST_DIR/out.txt" || fail "not full: $(cat "$TEST_DIR/out.txt")"

# ---- Dedup across images -------------------------------------------------------------------
v image export --force d "$TEST_DIR/d.raw"
v image import "$TEST_DIR/d.raw" e
b run e --json >"$TEST_DIR/e.json" || fail "backup of e"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; assert r["chunks_new"] == 0 and r["bytes_stored"] == 0, r' "$TEST_DIR/e.json" ||
  fail "a copy of d stored new chunks: $(cat "$TEST_DIR/e.json")"

# ---- In-place restore after a 1% change -----------------------------------------------
latest=$(b ls d --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
b restore "$latest" --to-file "$TEST_DIR/latest.raw"
# An idle client keeps the export open, so the lease stays held after
# the writes (as a running VM's QEMU does).
keep_open A d
nbd_do A '
for off in [3 * M, 17 * M, 29 * M, 44 * M]:
    h.pwrite(os.urandom(128 * 1024), off)'
[ "$(holder d)" = hostA ] || fail "lease not held by hostA: $(holder d)"
expect_status 1 "in use.*--force" b restore "$latest" --to d --in-place
kill "$keeper_A"
stop_blockd pid_A
b restore "$latest" --to d --in-place --json >"$TEST_DIR/ip.json" || fail "in-place restore"
python3 - "$TEST_DIR/ip.json" <<'PY' || fail "in-place wrote too much: $(cat "$TEST_DIR/ip.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["written"] + r["zeroed"] <= 0.02 * r["size"], r
assert r["written"] + r["zeroed"] >= 4 * 128 * 1024, r
print("in-place restore after a 1%% change: wrote %d of %d bytes" % (r["written"] + r["zeroed"], r["size"]))
PY
v image export --force d "$TEST_DIR/out"
cmp "$TEST_DIR/out" "$TEST_DIR/latest.raw" || fail "in-place restore differs"
start_host A
keep_open A d
nbd_do A 'h.pwrite(b"x" * 4096, 5 * M)'
b restore "$latest" --to d --in-place --force >/dev/null || fail "in-place --force"
kill "$keeper_A"
stop_blockd pid_A
v image export --force d "$TEST_DIR/out"
cmp "$TEST_DIR/out" "$TEST_DIR/latest.raw" || fail "in-place restore --force differs"

# ---- A flipped bit in a chunk ----------------------------------------------------------------
# The chunk holding 30M+4096 in backup 1 was overwritten later only by... nothing;
# pick the chunk of backup 2 at 7M: backup 3 onwards has the same, backup 1
# does not.  Its digest is the SHA-256 of that chunk of the snapshot.
victim=${ids[1]}
hex=$(python3 -c '
import hashlib, sys
f = open(sys.argv[1], "rb"); f.seek(7 << 20)
print(hashlib.sha256(f.read(128 * 1024)).hexdigest())' "$TEST_DIR/snap.$victim")
flip ()
{
  case "$VBK_TEST_STORE_KIND" in
    local)
      f=${repo#local:}/obj/vbk_chunk.$hex
      [ -f "$f" ] || fail "chunk file $f missing"
      python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(1000); b=f.read(1); f.seek(1000); f.write(bytes([b[0]^1]))' "$f" ;;
    rados)
      local ns=${repo#rados:"$VBK_TEST_POOL"/}
      ns=${ns%%\?*}
      rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" get "vbk_chunk.$hex" "$TEST_DIR/c" || fail "rados get"
      python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(1000); b=f.read(1); f.seek(1000); f.write(bytes([b[0]^1]))' "$TEST_DIR/c"
      rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" put "vbk_chunk.$hex" "$TEST_DIR/c" || fail "rados put" ;;
  esac
}
flip
rc=0
b verify >"$TEST_DIR/vout" 2>"$TEST_DIR/verr" || rc=$?
[ "$rc" = 1 ] || fail "verify did not fail: $(cat "$TEST_DIR/vout" "$TEST_DIR/verr")"
grep -q "vbk_chunk.$hex" "$TEST_DIR/verr" || fail "verify did not name the chunk: $(cat "$TEST_DIR/verr")"
grep -q "$victim" "$TEST_DIR/verr" || fail "verify did not name backup $victim: $(cat "$TEST_DIR/verr")"
grep -q "${ids[0]}" "$TEST_DIR/verr" && fail "verify named backup ${ids[0]}, which does not use the chunk"
expect_status 1 "vbk_chunk.$hex" b restore "$victim" --to-file "$TEST_DIR/bad.raw"
b restore "${ids[0]}" --to-file "$TEST_DIR/out" --force || fail "an unaffected backup does not restore"
cmp "$TEST_DIR/out" "$TEST_DIR/snap.${ids[0]}" || fail "unaffected restore differs"
# The next backup of the same data writes the chunk again.
v image import "$TEST_DIR/snap.$victim" f
b run f --json >"$TEST_DIR/f.json" || fail "backup of f"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))[0]; assert r["chunks_new"] >= 1, r' "$TEST_DIR/f.json" ||
  fail "the bad chunk was not written again: $(cat "$TEST_DIR/f.json")"
b restore "$victim" --to-file "$TEST_DIR/out" --force || fail "restore after the chunk was rewritten"
cmp "$TEST_DIR/out" "$TEST_DIR/snap.$victim" || fail "restore after rewrite differs"
b verify >/dev/null || fail "verify after rewrite"

# ---- prune, protect, rm, gc ---------------------------------------------------------------------
b protect "${ids[0]}"
b prune d --keep-last 2 --dry-run --json >"$TEST_DIR/p.json"
n_before=$(b ls d --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
b prune d --keep-last 2 >/dev/null
b ls d --json >"$TEST_DIR/ls.json"
python3 - "$TEST_DIR/ls.json" "${ids[0]}" <<'PY' || fail "prune kept the wrong backups: $(cat "$TEST_DIR/ls.json")"
import json, sys
l = json.load(open(sys.argv[1]))
assert len(l) == 3, l
assert l[0]["id"] == sys.argv[2] and l[0]["protected"], l
PY
expect_status 1 "protected" b rm "${ids[0]}"
b unprotect "${ids[0]}"
b rm "${ids[0]}"
b gc --clock-skew 0 --json >"$TEST_DIR/gc.json" || fail "gc"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["removed"] > 0, r' "$TEST_DIR/gc.json" ||
  fail "gc removed nothing: $(cat "$TEST_DIR/gc.json")"
b verify >/dev/null || fail "verify after gc"
for id in $(b ls --json | python3 -c 'import json,sys; print(" ".join(e["id"] for e in json.load(sys.stdin)))'); do
  b restore "$id" --to-file "$TEST_DIR/out" --force || fail "restore $id after gc"
  [ -f "$TEST_DIR/snap.$id" ] && { cmp "$TEST_DIR/out" "$TEST_DIR/snap.$id" || fail "restore $id after gc differs"; }
done
echo "backup roundtrip on $VBK_TEST_STORE_KIND: OK ($n_before backups before prune)"
