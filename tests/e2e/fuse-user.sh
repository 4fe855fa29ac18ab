#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-user.sh - "vbk mount" by a user who is not root, on the local
# store:
#   without access to /dev/fuse (0600 root here) the mount refuses with
#   one line that says what to do;
#   with access, it mounts through fusermount3 (setuid): the user's own
#   store, a snapshot's disk and a file inside it read right, the mount
#   belongs to the user, "vbk umount" (fusermount3 -u) ends it and the
#   serving process exits.
# The host's /dev/fuse is not changed: the mount part runs in a private
# mount namespace (unshare -m) where a 0666 node of the same device is
# bound over /dev/fuse; it goes away with the namespace.  Needs root to
# set that up (else exit 77, skipped, with the reason).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires mke2fs
requires setpriv
requires unshare
requires_fuse
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: setting up a user with /dev/fuse needs root (unshare -m)" >&2
  exit 77
fi
user=nobody
mode0=$(stat -c %a /dev/fuse)
uid=$(id -u "$user") gid=$(id -g "$user")
as_user () { setpriv --reuid="$uid" --regid="$gid" --clear-groups -- env HOME=/ "$@"; }

# A directory the user owns, with the binaries where it can run them.
chmod 0711 "$TEST_DIR"
U=$TEST_DIR/u
mkdir -p "$U/bin" "$U/mnt" "$U/src/dir"
cp "$VBK_BIN/vbk" "$U/bin/"
head -c 300000 /dev/urandom >"$U/src/dir/data.bin"
echo "hello from the user's disk" >"$U/src/hello.txt"
mke2fs -q -t ext4 -b 4096 -E root_owner=$uid:$gid -d "$U/src" "$U/fs.img" 16M || fail "mke2fs"
chown -R "$uid:$gid" "$U"
ustore=local:$U/store
uv () { as_user "$U/bin/vbk" --store "$ustore" "$@"; }
uv image import "$U/fs.img" disk >/dev/null || fail "import as $user"
uv snap create disk@s >/dev/null || fail "snapshot as $user"

# ---- Without access to /dev/fuse: a clear refusal ------------------------------------
if as_user sh -c 'exec 9<>/dev/fuse' 2>/dev/null; then
  echo "note: /dev/fuse is open to $user on this host: the refusal is not checked" >&2
else
  rc=0
  uv mount "$U/mnt" >"$TEST_DIR/out" 2>"$TEST_DIR/err" || rc=$?
  [ "$rc" = 1 ] || fail "mount without /dev/fuse access: exit $rc ($(cat "$TEST_DIR/err"))"
  [ "$(wc -l <"$TEST_DIR/err")" = 1 ] || fail "expected one line: $(cat "$TEST_DIR/err")"
  grep -q '^vbk: .*no permission to open /dev/fuse: run as root, or make /dev/fuse usable by your user' "$TEST_DIR/err" ||
    fail "the refusal does not say what to do: $(cat "$TEST_DIR/err")"
  mountpoint -q "$U/mnt" && fail "mounted anyway"
fi

# ---- With access, in a private mount namespace -------------------------------------
cat >"$TEST_DIR/inns.sh" <<'EOF'
set -eu
# A 0666 node of the FUSE device, bound over /dev/fuse in this namespace.
mount -t tmpfs -o mode=0755,size=1M tmpfs "$NODEDIR"
mknod -m 0666 "$NODEDIR/fuse" c $((16#$(stat -c %t /dev/fuse))) $((16#$(stat -c %T /dev/fuse)))
mount --bind "$NODEDIR/fuse" /dev/fuse
touch "$NODEDIR.ready"
as_user () { setpriv --reuid="$USER_UID" --regid="$USER_GID" --clear-groups -- env HOME=/ "$@"; }
as_user "$U/bin/vbk" --store "$USTORE" mount "$U/mnt" --log "$U/mount.log"
findmnt -no FSTYPE,OPTIONS "$U/mnt" >"$U/findmnt"
S=$U/mnt/images/disk/snapshots/s
as_user cmp "$S/disk" "$U/fs.img"
as_user cmp "$S/files/dir/data.bin" "$U/src/dir/data.bin"
as_user cat "$S/files/hello.txt" >"$U/hello.out"
as_user stat -c '%u' "$U/mnt" >"$U/owner"
pid=$(pgrep -u "$USER_UID" -f "vbk --store $USTORE mount" | head -1)
as_user "$U/bin/vbk" umount "$U/mnt"
for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then echo "serving process $pid still runs after umount" >&2; exit 1; fi
umount /dev/fuse
umount "$NODEDIR"
EOF
mkdir -p "$TEST_DIR/node"
rc=0
U=$U USTORE=$ustore USER_UID=$uid USER_GID=$gid NODEDIR=$TEST_DIR/node \
  unshare -m --propagation private bash "$TEST_DIR/inns.sh" >"$TEST_DIR/ns.out" 2>&1 || rc=$?
if [ "$rc" != 0 ] && ! [ -e "$TEST_DIR/node.ready" ]; then
  echo "SKIP: cannot give /dev/fuse to a user in a mount namespace here: $(head -3 "$TEST_DIR/ns.out")" >&2
  exit 77
fi
[ "$rc" = 0 ] || fail "mount as $user: $(cat "$TEST_DIR/ns.out") $(cat "$U/mount.log" 2>/dev/null)"
grep -q '^fuse' "$U/findmnt" || fail "not a FUSE mount: $(cat "$U/findmnt")"
grep -Eq '[ ,]ro(,|$)' "$U/findmnt" || fail "not read-only: $(cat "$U/findmnt")"
[ "$(cat "$U/owner")" = "$uid" ] || fail "the mount's root is not the user's: $(cat "$U/owner")"
[ "$(cat "$U/hello.out")" = "hello from the user's disk" ] || fail "hello.txt: $(cat "$U/hello.out")"
# The host's device is as it was.
[ "$(stat -c %a /dev/fuse)" = "$mode0" ] || fail "/dev/fuse changed on the host"
mountpoint -q "$U/mnt" && fail "still mounted on the host"
echo "vbk mount as $user: OK"
