#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-cache.sh - what vbk mount answers from its caches (the lookup and
# attribute cache of files/, readdirplus, the kernel's entry and attribute
# timeouts) is what the file system holds, on the local store:
#   a tree of 3,000 files in 60 directories, hard links, a symlink to a
#   directory and one inside a directory: every lstat through the mount
#   (after a listing with attributes, and again from the caches, and by
#   name without a listing on a fresh mount) equals the source's (type,
#   mode, size, mtime, link count, uid, gid);
#   a path through the symlinked directory resolves ("vbk files get" and
#   open through the mount); names that do not exist stay ENOENT; a new
#   snapshot shows at once in a mounted listing, and "ls -lR" gives the
#   same output twice.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires mke2fs
requires_fuse

store=$(new_store)
v () { vbk --store "$store" "$@"; }
D=$TEST_DIR
M=$D/mnt

python3 - "$D/src" <<'PY'
import os, sys
root = sys.argv[1]
base = 1700000000
for d in range(60):
    p = os.path.join(root, "many", "d%03d" % d)
    os.makedirs(p)
    for f in range(50):
        fp = os.path.join(p, "f%03d" % f)
        with open(fp, "w") as fh:
            fh.write("file %d/%d\n" % (d, f) * (f + 1))
        os.chmod(fp, 0o600 + (f % 8) * 0o10)
        os.utime(fp, (base + d * 100 + f, base + d * 100 + f))
        if f % 10 == 0:
            os.chown(fp, 1000 + f, 2000 + d)
    os.utime(p, (base + d, base + d))
os.link(os.path.join(root, "many", "d000", "f001"), os.path.join(root, "many", "d001", "hard"))
os.link(os.path.join(root, "many", "d000", "f001"), os.path.join(root, "hard2"))
os.symlink("many/d002", os.path.join(root, "linkdir"))
os.symlink("../d003/f004", os.path.join(root, "many", "d002", "rel"))
PY
mke2fs -q -t ext4 -b 4096 -E root_owner=0:0 -d "$D/src" "$D/fs.img" 64M || fail "mke2fs"
v image import "$D/fs.img" t >/dev/null && v snap create t@s >/dev/null || fail "import"

# check ROOT SRC: every entry's lstat under ROOT equals SRC's.
check ()
{
  python3 - "$1" "$D/src" <<'PY' || fail "attributes through the mount differ"
import os, stat, sys
mnt, src = sys.argv[1:]
n = 0
for dirpath, dirs, files in os.walk(src):
    rel = os.path.relpath(dirpath, src)
    for name in dirs + files:
        a = os.lstat(os.path.join(dirpath, name))
        b = os.lstat(os.path.join(mnt, rel, name))
        # A directory's size and link count are the source file
        # system's own.
        fields = ("st_mode", "st_uid", "st_gid")
        if not stat.S_ISDIR(a.st_mode):
            fields += ("st_size", "st_nlink")
        for f in fields:
            assert getattr(a, f) == getattr(b, f), (rel, name, f, getattr(a, f), getattr(b, f))
        assert int(a.st_mtime) == int(b.st_mtime), (rel, name, a.st_mtime, b.st_mtime)
        n += 1
assert n > 3000, n
print("%d entries checked" % n)
PY
}

mount_vbk "$M"
F=$M/images/t/snapshots/s/files
# By name first, no listing before (lookups from an empty cache).
[ "$(stat -c %s "$F/many/d059/f049")" = "$(stat -c %s "$D/src/many/d059/f049")" ] || fail "stat by name"
[ "$(cat "$F/linkdir/f003")" = "$(cat "$D/src/many/d002/f003")" ] || fail "read through the symlinked directory"
[ "$(cat "$F/many/d002/rel")" = "$(cat "$D/src/many/d003/f004")" ] || fail "read through a relative symlink"
[ ! -e "$F/many/d000/nothere" ] || fail "a missing name exists"
[ ! -e "$F/many/d000/f001/x" ] || fail "a path under a file exists"
ls -lR "$F" >"$D/ls1" || fail "ls -lR"
check "$F"
check "$F"                      # from the caches
ls -lR "$F" >"$D/ls2"
cmp "$D/ls1" "$D/ls2" || fail "ls -lR differs the second time"
[ ! -e "$F/many/d000/nothere" ] || fail "a missing name exists after the listing"
v files get "snap:t@s:/linkdir/f003" - | cmp - "$D/src/many/d002/f003" ||
  fail "files get through the symlinked directory"
# A new snapshot appears at once in the mounted listing.
v snap create t@s2 >/dev/null
[ "$(ls "$M/images/t/snapshots")" = "$(printf 's\ns2')" ] ||
  fail "new snapshot not listed: $(ls "$M/images/t/snapshots")"
[ -d "$M/images/t/snapshots/s2/files/many" ] || fail "new snapshot's files"
umount_vbk "$M"

# A fresh mount: lookups by name without any listing, then the check.
mount_vbk "$M"
check "$F"
umount_vbk "$M"
echo "fuse caches: OK"
