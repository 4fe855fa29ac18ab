#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-errors.sh - "vbk mount" when the store fails, and for a user that
# is not root, once per store backend (VBK_TEST_BACKENDS):
#   through a fault: store whose data reads fail with EIO while a trigger
#   file exists: a file whose data is not cached reads as EIO, with a log
#   line naming the object; a file read before and the listings inside
#   the open snapshot still work; nothing hangs (every command under a
#   timeout); once the trigger is gone the same file reads right (errors
#   are not cached).  With metadata reads failing, listing images and
#   snapshots fails with EIO and recovers.  A user that is not root
#   mounts through fusermount3 where /dev/fuse allows it (else vbk mount
#   says what to do, and that part is skipped).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires mke2fs
requires sfdisk
requires timeout
requires_fuse

store=$(new_store)
v () { vbk --store "$store" "$@"; }
D=$TEST_DIR
M=$D/mnt
T=timeout\ 20

make_disk "$D" 1
v image import "$D/disk1.raw" vm >/dev/null || fail "import"
v snap create vm@s1 >/dev/null || fail "snap create"

# ---- Data reads fail -------------------------------------------------------------

trig=$D/trigger
mount_vbk "$M" --store "fault:op=read,err=EIO,sticky=1,trigger=$trig@$store"
P=$M/images/vm/snapshots/s1/files/p1
$T ls -R "$P" >/dev/null || fail "ls -R before the fault"
$T cmp "$P/modes/script.sh" "$D/src1/modes/script.sh" || fail "control before"
touch "$trig"
out=$($T cat "$P/sizes/f3145745" 2>&1 >/dev/null) &&
  fail "a file read without error while the store fails"
[[ $out == *"Input/output error"* ]] || fail "expected EIO, got: $out"
out=$($T cmp "$M/images/vm/snapshots/s1/disk" "$D/disk1.raw" 2>&1) &&
  fail "the disk read without error while the store fails"
[[ $out == *"Input/output error"* ]] || fail "disk: expected EIO, got: $out"
$T cmp "$P/modes/script.sh" "$D/src1/modes/script.sh" || fail "control during"
$T ls -R "$P" >/dev/null || fail "ls -R during the fault"
# (Listing snapshots reads objects too, so it may fail now; the root
# needs no store.)
[ "$($T ls "$M")" = "$(printf 'backups\nimages')" ] || fail "root during the fault"
grep -q "vbk_data\..*injected fault" "$TEST_DIR/mount-mnt.log" ||
  fail "no log line names the object: $(tail -5 "$TEST_DIR/mount-mnt.log")"
rm "$trig"
$T cmp "$P/sizes/f3145745" "$D/src1/sizes/f3145745" || fail "after the fault"
$T cmp "$M/images/vm/snapshots/s1/disk" "$D/disk1.raw" || fail "disk after the fault"
umount_vbk "$M"

# ---- Metadata reads fail ---------------------------------------------------------

mount_vbk "$M" --store "fault:op=meta,err=EIO,sticky=1,trigger=$trig@$store"
[ "$($T ls "$M/images")" = vm ] || fail "images before"
touch "$trig"
out=$($T ls "$M/images/vm/snapshots" 2>&1) && fail "listing worked while metadata fails: $out"
[[ $out == *"Input/output error"* ]] || fail "snapshot list: expected EIO, got: $out"
out=$($T ls "$M/images" 2>&1) && fail "image list worked while metadata fails: $out"
[[ $out == *"Input/output error"* ]] || fail "image list: expected EIO, got: $out"
rm "$trig"
[ "$($T ls "$M/images/vm/snapshots")" = s1 ] || fail "snapshot list after"
umount_vbk "$M"

# ---- A user that is not root --------------------------------------------------------

user=nobody
if [ "$(id -u)" != 0 ] || ! id "$user" >/dev/null 2>&1 || ! command -v runuser >/dev/null; then
  echo "SKIP (part): not root, or no user $user to switch to" >&2
  exit 0
fi
mkdir -p "$D/user-mnt"
chown "$user" "$D/user-mnt"
chmod 755 "$D"
as_user () { runuser -u "$user" -- "$@"; }
if ! as_user sh -c 'exec 9<>/dev/fuse' 2>/dev/null; then
  # vbk mount says what to do, before it touches the store.
  expect_status 1 "no permission to open /dev/fuse" \
    as_user "$VBK_BIN/vbk" --store local:/nonexistent mount "$D/user-mnt"
  echo "SKIP (part): /dev/fuse is not usable by $user here" >&2
  exit 0
fi
expect_status 1 "needs user_allow_other in /etc/fuse.conf|no permission" \
  as_user "$VBK_BIN/vbk" --store "$store" mount --allow-other "$D/user-mnt"
if [ "$VBK_TEST_STORE_KIND" != local ]; then
  echo "SKIP (part): a user mount is tested on the local store only" >&2
  exit 0
fi
chown -R "$user" "${store#local:}"
as_user "$VBK_BIN/vbk" --store "$store" mount "$D/user-mnt" \
  --log "$D/user-mnt.log" || fail "vbk mount as $user: $(cat "$D/user-mnt.log")"
cleanup_fn "fusermount3 -u '$D/user-mnt' 2>/dev/null"
as_user cmp "$D/user-mnt/images/vm/snapshots/s1/disk" "$D/disk1.raw" ||
  fail "$user reads the disk"
[ "$(stat -c %U "$D/user-mnt/images")" = "$user" ] || fail "owner of the tree"
# Root may not look into a user's mount (FUSE without allow_other).
! ls "$D/user-mnt/images" >/dev/null 2>&1 || fail "root reads a user mount"
as_user "$VBK_BIN/vbk" umount "$D/user-mnt" || fail "vbk umount as $user"
