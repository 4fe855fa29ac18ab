#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# cli-image.sh - "vbk image" end to end, once per store backend
# (VBK_TEST_BACKENDS): create, ls, info and their --json output, resize
# (grow, and shrink dropping the data past the new end), rm, import of a
# sparse file and export back, which must be byte-identical, sparse, and
# leave the image thin; and the errors of these verbs with their exit
# status (1 failure, 2 usage), including a full store (fault: backend).

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp

M=$((1 << 20))
S=$(new_store)
v () { vbk --store "$S" "$@"; }

# objects NAME: the "objects" count of image NAME.
objects () { v image info "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["objects"])'; }

# ---- create, ls, info -------------------------------------------------------

v image ls --json | json_check 'd == []'
[ -z "$(v image ls)" ] || fail "ls of an empty store printed something"

v image create vm1 --size 10G
v image create small --size 1M --object-size 64K
v image create big-obj --size 100M --object-size 32M
v image create odd --size 12345

v image info vm1 --json | json_check '
d["name"] == "vm1" and d["size"] == 10 << 30 and d["object_size"] == 4 << 20
and d["objects"] == 0 and isinstance(d["id"], str) and d["id"] != ""'
v image info small --json | json_check '
d["size"] == 1 << 20 and d["object_size"] == 64 << 10'
v image info big-obj --json | json_check 'd["object_size"] == 32 << 20'
v image info odd --json | json_check 'd["size"] == 12345'

v image ls --json | json_check '
[i["name"] for i in d] == ["big-obj", "odd", "small", "vm1"]
and all(set(i) >= {"name", "id", "size", "object_size", "state"} for i in d)
and all(i["state"] == "ok" and "objects" not in i for i in d)
and [i["size"] for i in d] == [100 << 20, 12345, 1 << 20, 10 << 30]
and len(set(i["id"] for i in d)) == 4'

v image info vm1 >"$TEST_DIR/info"
grep -q "^name: *vm1$" "$TEST_DIR/info" || fail "info: name"
grep -q "^size: *10 GiB (10737418240 bytes)$" "$TEST_DIR/info" || fail "info: size"
grep -q "^object size: *4 MiB (4194304 bytes)$" "$TEST_DIR/info" || fail "info: object size"
grep -q "^objects: *0 of 2560 written$" "$TEST_DIR/info" || fail "info: objects"
grep -q "^state: *ok$" "$TEST_DIR/info" || fail "info: state"
v image ls >"$TEST_DIR/ls"
[ "$(wc -l <"$TEST_DIR/ls")" -eq 5 ] || fail "ls: expected a header and 4 lines"
grep -Eq "^vm1 +10 GiB +4 MiB +ok$" "$TEST_DIR/ls" || fail "ls: vm1 line: $(cat "$TEST_DIR/ls")"

# ---- errors of these verbs ----------------------------------------------------

expect_status 1 "image create: .*(exist|taken)" v image create vm1 --size 1G
v image info vm1 --json | json_check 'd["size"] == 10 << 30'
nosuch_re="([Nn]o such|[Nn]ot found|[Dd]oes not exist)"
for verb in info rm; do
  expect_status 1 "image $verb: .*(nosuch.*$nosuch_re|$nosuch_re.*nosuch)" \
    v image "$verb" nosuch
done
expect_status 1 "image resize: .*nosuch" v image resize nosuch --size 1G
expect_status 1 "image export: .*nosuch" v image export nosuch "$TEST_DIR/never"
[ ! -e "$TEST_DIR/never" ] || fail "export of a missing image created the file"
expect_status 1 "image import: .*$TEST_DIR/missing-file: No such file or directory" \
  v image import "$TEST_DIR/missing-file" fromfile
: >"$TEST_DIR/empty"
expect_status 1 "image import: .*empty" v image import "$TEST_DIR/empty" fromempty
expect_status 1 "image import: .*/dev/null: not a regular file" \
  v image import /dev/null fromnull
expect_status 1 "image import: .*not a regular file" v image import "$TEST_DIR" fromdir
expect_status 2 "--size: invalid size '12Q'" v image create q --size 12Q
expect_status 2 "--object-size: invalid object size '3M'" \
  v image create q --size 1G --object-size 3M
v image ls --json | json_check 'len(d) == 4'

# ---- import a sparse file, export it back -------------------------------------

src=$TEST_DIR/sparse.raw
python3 - "$src" <<'EOF'
import os, sys
M = 1 << 20
f = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(f, 100 * M)
# Random data in objects 0, 2, 3+4 (across a boundary), 12 and 24.
for off, n in [(0, 4096), (10 * M + 123, 100 * 1024), (16 * M - 8192, 16384),
               (50 * M, M), (100 * M - 4096, 4096)]:
    os.pwrite(f, os.urandom(n), off)
# Zeros that are written, not a hole (object 7): must not allocate.
os.pwrite(f, bytes(2 * M), 29 * M)
os.close(f)
EOF
v image import "$src" disk
v image info disk --json | json_check '
d["size"] == 100 << 20 and d["object_size"] == 4 << 20 and d["objects"] == 6'

out=$TEST_DIR/export.raw
v image export disk "$out" --force
cmp "$src" "$out" || fail "export differs from the imported file"
[ "$(stat -c %s "$out")" -eq $((100 * M)) ] || fail "export has the wrong size"
alloc=$(($(stat -c '%b * %B' "$out")))
[ "$alloc" -lt $((4 * M)) ] || fail "export is not sparse: $alloc bytes allocated"

# Export over an existing, larger file: it ends up the image's size.
head -c $((3 * M)) /dev/urandom >"$out"
truncate -s 200M "$out"
v image export disk "$out" --force
cmp "$src" "$out" || fail "export over an existing file differs"

# Another object size, and a size that is not a multiple of it.
head -c $((M + 4321)) /dev/urandom >"$TEST_DIR/odd.raw"
v image import --object-size 64K "$TEST_DIR/odd.raw" odd2
v image info odd2 --json | json_check '
d["size"] == (1 << 20) + 4321 and d["object_size"] == 64 << 10 and d["objects"] == 17'
v image export odd2 "$TEST_DIR/odd.out"
cmp "$TEST_DIR/odd.raw" "$TEST_DIR/odd.out" || fail "odd-sized export differs"

# An empty image exports as one hole.
v image export small "$TEST_DIR/small.out"
[ "$(stat -c %s "$TEST_DIR/small.out")" -eq "$M" ] || fail "small: size"
cmp "$TEST_DIR/small.out" <(head -c "$M" /dev/zero) || fail "small: not zeros"

expect_status 1 "image import: .*(exist|taken)" v image import "$src" disk
v image info disk --json | json_check 'd["objects"] == 6'
expect_status 1 "image export: .*No such file or directory" \
  v image export disk "$TEST_DIR/no/such/dir/f.raw"

# ---- resize -------------------------------------------------------------------

full=$TEST_DIR/full.raw
head -c $((8 * M)) /dev/urandom >"$full"
v image import "$full" r
[ "$(objects r)" -eq 2 ] || fail "r: expected 2 objects"

# Shrink into the middle of object 1: the data before stays, the data
# past the end is gone.
v image resize r --size 5632K
v image info r --json | json_check 'd["size"] == 5632 << 10'
v image export r "$TEST_DIR/r1.raw"
[ "$(stat -c %s "$TEST_DIR/r1.raw")" -eq $((5632 * 1024)) ] || fail "r1: size"
cmp "$TEST_DIR/r1.raw" <(head -c $((5632 * 1024)) "$full") || fail "r1: data"

# Grow again: the old data does not come back.
v image resize r --size 8M
v image export r "$TEST_DIR/r2.raw"
cmp "$TEST_DIR/r2.raw" <(head -c $((5632 * 1024)) "$full"; head -c $((2560 * 1024)) /dev/zero) ||
  fail "r2: data past the shrunk end came back"

# Shrink below an object: it goes away.
v image resize r --size 3M
[ "$(objects r)" -eq 1 ] || fail "r: expected 1 object after shrinking to 3M"
v image export r "$TEST_DIR/r3.raw"
cmp "$TEST_DIR/r3.raw" <(head -c $((3 * M)) "$full") || fail "r3: data"

v image resize r --size 1T
v image info r --json | json_check 'd["size"] == 1 << 40 and d["objects"] == 1'
v image export r "$TEST_DIR/r4.raw"
[ "$(stat -c %s "$TEST_DIR/r4.raw")" -eq $((1 << 40)) ] || fail "r4: size"
cmp -n $((3 * M)) "$TEST_DIR/r4.raw" "$full" || fail "r4: data"
rm -f "$TEST_DIR/r4.raw"

# ---- rm -------------------------------------------------------------------------

v image rm r
expect_status 1 "image info: .*r" v image info r
v image ls --json | json_check '"r" not in [i["name"] for i in d]'
v image create r --size 1M
v image info r --json | json_check 'd["objects"] == 0'
for name in vm1 small big-obj odd odd2 disk r; do v image rm "$name"; done
v image ls --json | json_check 'd == []'

# ---- a full store -----------------------------------------------------------------

full_store () { echo "fault:op=write,err=ENOSPC,nth=$1@$S"; }
expect_status 1 "image create: .*No space left on device" \
  vbk --store "$(full_store 1)" image create nospace --size 1G
v image ls --json | json_check '"nospace" not in [i["name"] for i in d]'

# Import fails part way: one line, and no half image left behind.
expect_status 1 "image import: .*No space left on device" \
  vbk --store "$(full_store 8)" image import "$src" nospace
v image ls --json | json_check '"nospace" not in [i["name"] for i in d]'

# A read error during export: one line, and no partial file left.
v image import "$full" w
expect_status 1 "image export: .*Input/output error" \
  vbk --store "fault:op=read,err=EIO,nth=2@$S" image export w "$TEST_DIR/w.raw"
[ ! -e "$TEST_DIR/w.raw" ] || fail "a failed export left its file behind"
v image rm w

echo "cli-image ($VBK_TEST_STORE_KIND): OK"
