#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-encrypt.sh - an encrypted repository end to end, once per store
# backend (VBK_TEST_BACKENDS: the image and the repository both on it):
#   init --encrypt writes a key file (mode 0600) and refuses to overwrite
#   one; a full backup of a GPT disk with ext4, random data and a known
#   text pattern, and an incremental after scattered writes through
#   vbk-blockd, restore byte-equal to their snapshots; no stored object
#   holds the pattern or a file name of the file system, and no chunk is
#   named by the SHA-256 of its data (a plain repository, backed up the
#   same way, holds both: the check can fail); a wrong passphrase, a key
#   file of another repository and a missing key are refused with a clear
#   error and write nothing (repository objects and image snapshots
#   unchanged); the passphrase from a file; vbk files and vbk mount read
#   the backups with the key; verify, rm, gc, prune; a flipped bit in a
#   stored chunk is caught by the GCM tag: verify names the chunk and the
#   backup, restore fails naming it.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"
. "$VBK_SRC/tests/fuse-functions.sh"

requires python3
requires nbdsh
requires cmp
requires mke2fs
requires sfdisk
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados

M=$((1024 * 1024))
store=$(new_store)
repo=$(new_store)
plain=$(new_store)
other=$(new_store)
key=$TEST_DIR/repo.key
D=$TEST_DIR
export VBK_PASSPHRASE='correct horse battery staple'
unset VBK_REPO VBK_KEY_FILE
v () { vbk --store "$store" "$@"; }
# b VERB ARGS...: vbk backup VERB on the encrypted repository, with its key.
b () { local verb=$1; shift; vbk --store "$store" backup "$verb" --repo "$repo" --key-file "$key" "$@"; }
PATTERN=VBK-ENCRYPTION-CANARY-a1b2c3

# dump_objects URI DIR: every object of the repository URI into DIR.
dump_objects ()
{
  rm -rf "$2"
  mkdir -p "$2"
  case "$VBK_TEST_STORE_KIND" in
    local) cp "${1#local:}"/obj/* "$2"/ ;;
    rados)
      local ns=${1#rados:"$VBK_TEST_POOL"/} o
      ns=${ns%%\?*}
      for o in $(rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" ls); do
        rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" get "$o" "$2/$o" || fail "rados get $o"
      done ;;
  esac
}
# state URI: a line per object (name and SHA-256 of its bytes) and the
# snapshots of image vm: what must not change when a command is refused.
state ()
{
  dump_objects "$1" "$D/state"
  (cd "$D/state" && sha256sum -- * | sort)
  v snap ls vm 2>/dev/null || true
}

# ---- init ---------------------------------------------------------------------------------------
vbk backup init "$repo" --encrypt --key-file "$key" --kdf-iterations 2000 >/dev/null ||
  fail "init --encrypt"
[ "$(stat -c %a "$key")" = 600 ] || fail "key file mode $(stat -c %a "$key")"
expect_status 1 "exists" vbk backup init "$other" --encrypt --key-file "$key"
expect_status 2 "needs --key-file" vbk backup init "$other" --encrypt
vbk backup init "$other" --encrypt --key-file "$D/other.key" --kdf-iterations 2000 >/dev/null ||
  fail "init of a second encrypted repository"
vbk backup init "$plain" >/dev/null || fail "init plain"

# ---- The disk: ext4 on GPT, random data, a known pattern ----------------------------------------
make_disk "$D" 1
python3 - "$D/disk1.raw" "$PATTERN" <<'PY'
import os, sys
f = open(sys.argv[1], "r+b")
f.seek(57 << 20); f.write(os.urandom(2 << 20))
f.seek(60 << 20); f.write((sys.argv[2].encode() + b"\n") * ((2 << 20) // (len(sys.argv[2]) + 1)))
PY
v image import "$D/disk1.raw" vm >/dev/null || fail "import"

b run vm --json >"$D/run1.json" || fail "backup 1: $(cat "$D/run1.json")"
id1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$D/run1.json")
b restore "$id1" --to-file "$D/r1.raw" || fail "restore 1"
cmp "$D/r1.raw" "$D/disk1.raw" || fail "restore 1 differs"

# ---- An incremental after scattered writes --------------------------------------------------------
start_blockd pid_a "$D/a.sock"
nbdsh -u "nbd+unix:///vm?socket=$D/a.sock" -c '
import os
for off in (3 << 20, 20 << 20, 61 << 20):
    h.pwrite(os.urandom(4096), off)
h.flush()' || fail "nbd writes"
stop_blockd pid_a
b run vm --json >"$D/run2.json" || fail "backup 2: $(cat "$D/run2.json")"
python3 - "$D/run2.json" <<'PY' || fail "backup 2 not incremental: $(cat "$D/run2.json")"
import json, sys
r = json.load(open(sys.argv[1]))[0]
assert not r["full"] and r["chunks_read"] <= 3, r
PY
id2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$D/run2.json")
snap2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["snapshot"])' "$D/run2.json")
v image export --force "vm@$snap2" "$D/snap2.raw" || fail "export"
b restore "$id2" --to-file "$D/r2.raw" || fail "restore 2"
cmp "$D/r2.raw" "$D/snap2.raw" || fail "restore 2 differs"
b restore "$id1" --to vm1 || fail "restore 1 to an image"
v image export --force vm1 "$D/r1b.raw" || fail "export vm1"
cmp "$D/r1b.raw" "$D/disk1.raw" || fail "restore 1 to an image differs"
b info "$id2" --json | json_check 'd["image"] == "vm" and d["parent"] is not None'

# ---- What is stored ----------------------------------------------------------------------------------
vbk --store "$store" backup run vm --repo "$plain" >/dev/null || fail "plain backup"
python3 - "$D/disk1.raw" >"$D/sums" <<'PY'
import hashlib, sys
f = open(sys.argv[1], "rb")
while True:
    c = f.read(4 << 20)
    if not c:
        break
    if c.count(0) != len(c):
        print(hashlib.sha256(c).hexdigest())
PY
check_stored ()  # URI EXPECT(yes|no)
{
  local n_pat n_name n_sum
  dump_objects "$1" "$D/objs"
  n_pat=$(grep -l -r -F -- "$PATTERN" "$D/objs" | wc -l || true)
  n_name=$(grep -l -r -F -- "lost+found" "$D/objs" | wc -l || true)
  n_sum=$(cd "$D/objs" && ls | sed -n 's/^vbk_chunk\.//p' | grep -c -F -f "$D/sums" || true)
  echo "$1: $n_pat objects with the pattern, $n_name with a file name, $n_sum chunks named by SHA-256"
  if [ "$2" = yes ]; then
    [ "$n_pat" -gt 0 ] && [ "$n_name" -gt 0 ] && [ "$n_sum" -gt 0 ] ||
      fail "the plain repository should show the data (the check cannot work)"
  else
    [ "$n_pat" = 0 ] && [ "$n_name" = 0 ] && [ "$n_sum" = 0 ] ||
      fail "the encrypted repository shows plain data or plain ids"
  fi
}
check_stored "$plain" yes
check_stored "$repo" no
ls "$D/objs" | grep -q '^vbk_chunk\.' || fail "no chunks found in the encrypted repository"

# ---- Wrong keys: refused, nothing written ----------------------------------------------------------
state "$repo" >"$D/before"
VBK_PASSPHRASE=wrong expect_status 1 "wrong passphrase or key file" b ls
VBK_PASSPHRASE=wrong expect_status 1 "wrong passphrase or key file" b run vm
VBK_PASSPHRASE=wrong expect_status 1 "wrong passphrase or key file" b gc
VBK_PASSPHRASE=wrong expect_status 1 "wrong passphrase or key file" b rm "$id1"
expect_status 1 "wrong passphrase or key file" vbk --store "$store" backup run vm --repo "$repo" --key-file "$D/other.key"
expect_status 1 "encrypted.*key file" vbk --store "$store" backup run vm --repo "$repo"
expect_status 1 "not encrypted" vbk --store "$store" backup ls --repo "$plain" --key-file "$key"
state "$repo" >"$D/after"
diff "$D/before" "$D/after" >/dev/null || fail "a refused command changed something: $(diff "$D/before" "$D/after" | head)"
printf '%s\n' "$VBK_PASSPHRASE" >"$D/pass"
VBK_PASSPHRASE= b ls --passphrase-file "$D/pass" | grep -q "$id2" || fail "ls with --passphrase-file"

# ---- vbk files and vbk mount with the key --------------------------------------------------------
v files get "backup:vm/$id2:/p1" "$D/get" --repo "$repo" --key-file "$key" || fail "files get"
same_tree "$D/src1" "$D/get" "vbk files get of an encrypted backup"
expect_fail "encrypted" v files get "backup:vm/$id2:/p1" "$D/get2" --repo "$repo"
if [ -c /dev/fuse ] && { exec 9<>/dev/fuse; } 2>/dev/null; then
  exec 9>&-
  mount_vbk "$D/mnt" --repo "$repo" --key-file "$key"
  cmp "$D/mnt/backups/vm/$id2/disk" "$D/snap2.raw" || fail "mounted backup differs"
  umount_vbk "$D/mnt"
else
  echo "note: /dev/fuse is not usable here: vbk mount not checked"
fi

# ---- rm, gc, prune, verify ----------------------------------------------------------------------------
b verify >/dev/null || fail "verify"
b rm "$id1"
b gc --clock-skew 0 --json | json_check 'd["removed"] >= 1'
b run vm >/dev/null || fail "backup 3"
b prune vm --keep-last 2 >/dev/null || fail "prune"
b verify >/dev/null || fail "verify after gc"
b restore "$id2" --to-file "$D/r2b.raw" || fail "restore 2 after gc"
cmp "$D/r2b.raw" "$D/snap2.raw" || fail "restore 2 after gc differs"

# ---- A flipped bit: the GCM tag ---------------------------------------------------------------------------
dump_objects "$repo" "$D/objs"
# The chunk at 60M (the pattern, unchanged since backup 1): used by every backup.
hex=$(cd "$D/objs" && ls -S vbk_chunk.* | tail -1)
hex=${hex#vbk_chunk.}
case "$VBK_TEST_STORE_KIND" in
  local) f=${repo#local:}/obj/vbk_chunk.$hex ;;
  rados) f=$D/objs/vbk_chunk.$hex ;;
esac
python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(40); b=f.read(1); f.seek(40); f.write(bytes([b[0]^1]))' "$f"
if [ "$VBK_TEST_STORE_KIND" = rados ]; then
  ns=${repo#rados:"$VBK_TEST_POOL"/}
  ns=${ns%%\?*}
  rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" put "vbk_chunk.$hex" "$f" || fail "rados put"
fi
rc=0
b verify >"$D/vout" 2>"$D/verr" || rc=$?
[ "$rc" = 1 ] || fail "verify did not fail: $(cat "$D/vout" "$D/verr")"
grep -q "vbk_chunk.$hex" "$D/verr" || fail "verify did not name the chunk: $(cat "$D/verr")"
grep -q "authentication failed" "$D/verr" || fail "verify did not say the tag failed: $(cat "$D/verr")"
grep -q "$id2" "$D/verr" || fail "verify did not name backup $id2: $(cat "$D/verr")"
expect_status 1 "vbk_chunk.$hex" b restore "$id2" --to-file "$D/bad.raw"
echo "backup encryption on $VBK_TEST_STORE_KIND: OK"
