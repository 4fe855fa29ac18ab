#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-backup-export.sh - vbk-blockd exports a backup read-only as
# backup:IMAGE/ID, once per store backend (VBK_TEST_BACKENDS: the images
# and the repository both on it), with real NBD clients:
#   qemu-img compare of the export against the restored file, and
#   qemu-img convert from its nbd+unix URI; nbdinfo --map shows the zero
#   chunks as holes and the written ones as data; backup:IMAGE/latest;
#   qemu-io cannot write, and writes, trims and zeroes sent anyway (libnbd
#   without its client-side checks) get EPERM while flush succeeds; the
#   repository from --repo, from the config file and from $VBK_REPO, and
#   a clear error without one or for an unknown backup; NBD_OPT_LIST does
#   not list backups; a backup removed and garbage-collected while it is
#   exported: the open export is a registered reader, so gc keeps its
#   chunks and every read (of chunks never read before too) is right,
#   block status answers; once it is closed gc frees the chunks and a new
#   open is refused; a
#   flipped chunk: EIO for that chunk's range only, the log names the
#   chunk, the rest of the export reads right.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires qemu-img
requires qemu-io
requires nbdinfo
requires cmp
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados

K=1024
M=$((1024 * 1024))
CS=$((128 * K))                 # the repository's chunk size
store=$(new_store)
repo=$(new_store)
unset VBK_REPO
v () { vbk --store "$store" "$@"; }
b () { VBK_REPO=$repo "$VBK_BIN/vbk" --store "$store" backup "$@"; }
py_nbd=$(python_with_nbd)
sock=$TEST_DIR/A.sock
uri () { echo "nbd+unix:///$1?socket=$sock"; }

b init --chunk-size 128K >/dev/null
v image create d --size 8M
v image create g --size 4M

start_blockd pid_A "$sock" --repo "$repo"

# d: data in chunks 0-1, 10, 33 (a partial chunk), 63 (the last); the
# rest never written (holes), and chunk 20 written with zeroes (a hole
# in the backup too: zero chunks are not stored).
PATH=/usr/bin:$PATH "$py_nbd" - "$(uri d)" "$(uri g)" <<'PY' || fail "write the images"
import nbd, os, sys
K, M, CS = 1024, 1 << 20, 128 * 1024
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(os.urandom(2 * CS), 0)
h.pwrite(b"text of chunk ten\n" * 1000, 10 * CS)
h.pwrite(bytes(CS), 20 * CS)
h.pwrite(os.urandom(5000), 33 * CS + 100)
h.pwrite(os.urandom(CS), 63 * CS)
h.flush(); h.shutdown()
h = nbd.NBD(); h.connect_uri(sys.argv[2])
h.pwrite(os.urandom(4 * M), 0)
h.flush(); h.shutdown()
PY

id=$(b run d --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
gid=$(b run g --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
b restore "$id" --to-file "$TEST_DIR/d.raw" >/dev/null
b restore "$gid" --to-file "$TEST_DIR/g.raw" >/dev/null

# ---- The bytes: compare, convert, latest -----------------------------------------
qemu-img compare -f raw -F raw "$TEST_DIR/d.raw" "$(uri "backup:d/$id")" ||
  fail "qemu-img compare: the export differs from the restored backup"
qemu-img convert -f raw -O raw "$(uri "backup:d/$id")" "$TEST_DIR/conv.raw" ||
  fail "qemu-img convert from the backup export"
cmp "$TEST_DIR/conv.raw" "$TEST_DIR/d.raw" || fail "qemu-img convert: bytes differ"
qemu-img compare -f raw -F raw "$TEST_DIR/g.raw" "$(uri backup:g/latest)" ||
  fail "backup:g/latest differs from g's backup"
[ "$(nbdinfo --size "$(uri "backup:d/$id")")" = $((8 * M)) ] || fail "size of the export"

# ---- The map: zero and unwritten chunks are holes --------------------------------
nbdinfo --map "$(uri "backup:d/$id")" >"$TEST_DIR/map" || fail "nbdinfo --map"
python3 - "$TEST_DIR/map" <<'PY' || fail "map: $(cat "$TEST_DIR/map")"
import sys
CS = 128 * 1024
data = {0, 1, 10, 33, 63}
seen = {}
for line in open(sys.argv[1]):
    off, length, typ = line.split()[:3]
    off, length, typ = int(off), int(length), int(typ)
    assert off % CS == 0 and length % CS == 0, line
    for c in range(off // CS, (off + length) // CS):
        seen[c] = typ
assert sorted(seen) == list(range(64)), seen
for c, t in seen.items():
    # 0: data; 3: hole,zero
    assert t == (0 if c in data else 3), (c, t)
PY
grep -q 'hole' "$TEST_DIR/map" || fail "no holes in the map"

# ---- Read-only: qemu-io cannot write; EPERM for what is sent anyway --------------
rc=0
qemu-io -f raw -c 'write -P 0x55 0 4k' "$(uri "backup:d/$id")" >"$TEST_DIR/qio" 2>&1 || rc=$?
grep -Eqi 'read-only|permission|not permitted' "$TEST_DIR/qio" || fail "qemu-io write was not refused: $(cat "$TEST_DIR/qio")"
grep -q 'wrote' "$TEST_DIR/qio" && fail "qemu-io wrote: $(cat "$TEST_DIR/qio")"
PATH=/usr/bin:$PATH "$py_nbd" - "$(uri "backup:d/$id")" <<'PY' || fail "writes to the backup export"
import errno, nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
assert h.is_read_only(), "not advertised read-only"
assert not h.can_trim() and not h.can_zero()
h.set_strict_mode(0)        # send them anyway: the server must refuse
for what, f in (("write", lambda: h.pwrite(b"x" * 4096, 0)),
                ("trim", lambda: h.trim(4096, 0)),
                ("zero", lambda: h.zero(4096, 0))):
    try:
        f()
    except nbd.Error as e:
        assert e.errno in (errno.EPERM, "EPERM"), (what, e.errno, e.string)
    else:
        raise SystemExit(what + " succeeded on a backup export")
h.flush()
h.shutdown()
PY
cmp <(head -c 4096 "$TEST_DIR/d.raw") <(nbdsh -u "$(uri "backup:d/$id")" -c 'import sys; sys.stdout.buffer.write(h.pread(4096, 0))') ||
  fail "data changed after refused writes"

# ---- Where the repository comes from; errors ------------------------------------
stop_blockd pid_A
start_blockd pid_B "$TEST_DIR/B.sock"
nbdinfo "nbd+unix:///backup:d/$id?socket=$TEST_DIR/B.sock" >"$TEST_DIR/out" 2>&1 &&
  fail "a backup export without a repository opened"
grep -q 'no backup repository' "$TEST_DIR/B.log" || fail "no clear error without --repo: $(tail -3 "$TEST_DIR/B.log")"
stop_blockd pid_B
printf '[blockd]\nrepo = %s\n' "$repo" >"$TEST_DIR/blockd.conf"
start_blockd pid_C "$TEST_DIR/C.sock" --config "$TEST_DIR/blockd.conf"
[ "$(nbdinfo --size "nbd+unix:///backup:d/$id?socket=$TEST_DIR/C.sock")" = $((8 * M)) ] ||
  fail "repo from the config file"
stop_blockd pid_C
VBK_REPO=$repo start_blockd pid_A "$sock"
[ "$(nbdinfo --size "$(uri "backup:g/$gid")")" = $((4 * M)) ] || fail "repo from \$VBK_REPO"
nbdinfo "$(uri backup:d/nosuchbackup)" >/dev/null 2>&1 && fail "an unknown backup opened"
grep -q "no backup 'nosuchbackup'" "$TEST_DIR/A.log" || fail "unknown backup: no clear error: $(tail -3 "$TEST_DIR/A.log")"
nbdinfo "$(uri "backup:g/$id")" >/dev/null 2>&1 && fail "d's backup opened as g's"
grep -q "backup $id is of image d" "$TEST_DIR/A.log" || fail "backup of another image: $(tail -3 "$TEST_DIR/A.log")"
# NBD_OPT_LIST lists images, not backups.
nbdinfo --list --json "$(uri d)" >"$TEST_DIR/list" || fail "nbdinfo --list"
grep -q '"export-name": "d"' "$TEST_DIR/list" || fail "list: $(cat "$TEST_DIR/list")"
grep -q 'backup:' "$TEST_DIR/list" && fail "list shows backups: $(cat "$TEST_DIR/list")"

# ---- A backup removed and collected while exported -------------------------------
# An open export is a registered reader of its backup: gc keeps every
# chunk it uses, so it reads on unchanged (never-read chunks included);
# once the export is closed the next gc frees them, and a new open is
# refused.
PATH=/usr/bin:$PATH "$py_nbd" - "$(uri "backup:g/$gid")" "$TEST_DIR/g.raw" \
  "$VBK_BIN/vbk" "$store" "$repo" "$gid" <<'PY' || fail "gc while exported"
import json, nbd, os, subprocess, sys, time
uri, raw, vbk, store, repo, gid = sys.argv[1:]
CS = 128 * 1024
want = open(raw, "rb").read()
env = dict(os.environ, VBK_REPO=repo)
def vbk_backup(*args):
    return subprocess.run([vbk, "--store", store, "backup"] + list(args),
                          check=True, stdout=subprocess.PIPE, env=env).stdout
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(uri)
assert h.pread(CS, 0) == want[:CS]
vbk_backup("rm", gid)
gc = json.loads(vbk_backup("gc", "--clock-skew", "0", "--json"))
for c in range(16, 32):         # never read before: not in the reader's cache
    got = h.pread(CS, c * CS)
    assert got == want[c * CS:(c + 1) * CS], "wrong bytes from chunk %d" % c
assert gc["removed"] == 0 and gc["open_readers"] >= 1, gc
ext = []
h.block_status(CS, 0, lambda ctx, off, e, err: ext.extend(e))
assert ext and ext[1] == 0, ext
h.shutdown()
# The export closes when its last client has gone; then gc frees the chunks.
for _ in range(100):
    gc = json.loads(vbk_backup("gc", "--clock-skew", "0", "--json"))
    if gc["open_readers"] == 0:
        break
    time.sleep(0.1)
assert gc["open_readers"] == 0 and gc["removed"] >= 16, gc
h = nbd.NBD()
try:
    h.connect_uri(uri)
except nbd.Error:
    pass
else:
    raise SystemExit("a removed backup opened")
PY

# ---- A flipped chunk: EIO for its range only --------------------------------------
hex=$(python3 -c '
import hashlib, sys
f = open(sys.argv[1], "rb"); f.seek(10 * 128 * 1024)
print(hashlib.sha256(f.read(128 * 1024)).hexdigest())' "$TEST_DIR/d.raw")
case "$VBK_TEST_STORE_KIND" in
  local)
    f=${repo#local:}/obj/vbk_chunk.$hex
    [ -f "$f" ] || fail "chunk file $f missing"
    python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(100); b=f.read(1); f.seek(100); f.write(bytes([b[0]^1]))' "$f" ;;
  rados)
    ns=${repo#rados:"$VBK_TEST_POOL"/}
    ns=${ns%%\?*}
    rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" get "vbk_chunk.$hex" "$TEST_DIR/c" || fail "rados get"
    python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(100); b=f.read(1); f.seek(100); f.write(bytes([b[0]^1]))' "$TEST_DIR/c"
    rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" put "vbk_chunk.$hex" "$TEST_DIR/c" || fail "rados put" ;;
esac
PATH=/usr/bin:$PATH "$py_nbd" - "$(uri "backup:d/$id")" "$TEST_DIR/d.raw" <<'PY' || fail "flipped chunk"
import errno, nbd, sys
CS = 128 * 1024
want = open(sys.argv[2], "rb").read()
h = nbd.NBD()
h.connect_uri(sys.argv[1])
def fails(off, n):
    try:
        h.pread(n, off)
    except nbd.Error as e:
        assert e.errno in (errno.EIO, "EIO"), e.errno
        return True
    return False
assert fails(10 * CS, CS)
assert fails(10 * CS + CS - 1, 1)
assert fails(9 * CS + CS - 512, 1024)     # a read that spans it
assert fails(10 * CS, 4096)               # again: not cached as good
for off, n in ((0, 2 * CS), (9 * CS, CS), (11 * CS, CS), (10 * CS - 1, 1),
               (11 * CS, 1), (33 * CS, CS), (63 * CS, CS)):
    assert h.pread(n, off) == want[off:off + n], (off, n)
h.shutdown()
PY
grep -q "vbk_chunk.$hex" "$TEST_DIR/A.log" || fail "the log does not name chunk $hex: $(tail -5 "$TEST_DIR/A.log")"
# The export is still served to new clients, and the rest still compares.
qemu-img compare -f raw -F raw "$TEST_DIR/d.raw" "$(uri "backup:d/$id")" >/dev/null 2>&1 &&
  fail "compare passed over a corrupt chunk"
stop_blockd pid_A
echo "backup export on $VBK_TEST_STORE_KIND: OK"
