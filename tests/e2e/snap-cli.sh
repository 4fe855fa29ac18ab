#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# snap-cli.sh - "vbk snap" and "vbk diff" end to end on images written by
# qemu-io through vbk-blockd, once per store backend (VBK_TEST_BACKENDS):
#   snap create while blockd holds the lease goes to blockd (its log line,
#   the pause reported with -v, the lease's holder and epoch unchanged);
#   snap ls (text and --json); writes to known objects after the snapshot
#   and diff --from s1 (--json and text) returns exactly those objects;
#   vbk image export of the live image against a model, and the snapshot
#   read through blockd's IMAGE@SNAP export against a copy saved at
#   snapshot time; rollback refused while the lease is held, done with
#   --force (then the bytes equal the copy, and the holder's export is
#   fenced); snap rm frees the copies
#   (clone files of the local store, clones in RADOS listsnaps);
#   snap create with nobody holding the lease (vbk takes it for the
#   moment); a consistency group across two images held by two daemons
#   (their snapshots hold the bytes from before it);
#   groups that fail (an image missing, a snapshot name taken) leave no
#   snapshot behind; usage errors (IMAGE@SNAP parsed strictly) and --help.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires qemu-io
requires qemu-img
requires nbdinfo
[ "$VBK_TEST_STORE_KIND" = rados ] && requires rados


M=$((1 << 20))
store=$(new_store)
v () { vbk --store "$store" "$@"; }

# lease_field IMAGE KEY
lease_field () { v lease status "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"; }

# clones: copies kept for snapshots, all objects of the store together.
clones ()
{
  case "$VBK_TEST_STORE_KIND" in
    local)
      find "${store#local:}/clone" -type f | wc -l ;;
    rados)
      local o
      for o in $(rados_of "$store" ls); do
        rados_of "$store" listsnaps "$o"
      done | awk '$1 ~ /^[0-9]+$/' | wc -l ;;
  esac
}

log=$TEST_DIR/a.log     # host-a's vbk-blockd (start_blockd)
uri () { echo "nbd+unix:///$1?socket=$2"; }
# qio SOCKET IMAGE COMMANDS...: qemu-io (read-only for IMAGE@SNAP),
# failing the test on an error or a pattern mismatch.
qio ()
{
  local sock=$1 img=$2 args=() c
  shift 2
  for c in "$@"; do args+=(-c "$c"); done
  # A snapshot export is read-only: open it so.
  [[ $img == *@* ]] && args=(-r "${args[@]}")
  qemu-io -f raw "${args[@]}" "$(uri "$img" "$sock")" >"$TEST_DIR/qio" 2>&1 ||
    fail "qemu-io on $img: $(cat "$TEST_DIR/qio")"
  ! grep -q "Pattern verification failed" "$TEST_DIR/qio" ||
    fail "qemu-io on $img: $(cat "$TEST_DIR/qio")"
}
sock_a=$TEST_DIR/a.sock
sock_b=$TEST_DIR/b.sock
skipped=()

. "$VBK_SRC/tests/vm-client.sh"


# ---- Usage errors and help (no store needed) --------------------------------

for verb in create rm rollback; do
  for bad in disk1 disk1@ @s1 'disk1@s1@s2' 'disk1@@s1' 'disk 1@s1' \
             'disk1@s 1' 'disk1@.s1' '-x@s1' "disk1@$(printf 'a%.0s' {1..129})"; do
    expect_status 2 "IMAGE@SNAP|missing|invalid|unknown option" \
      v snap $verb -- "$bad"
  done
  expect_status 2 "missing argument" v snap $verb
done
expect_status 2 "exactly one '@'" v snap rm disk1@s1@s2
expect_status 2 "invalid snapshot name '.s1'" v snap rm disk1@.s1
expect_status 2 "invalid image name 'disk 1'" v snap rm 'disk 1@s1'
expect_status 2 "unexpected argument" v snap rm disk1@s1 disk1@s2
expect_status 2 "unexpected argument" v snap rollback disk1@s1 disk1@s2
expect_status 2 "need --group" v snap create disk1@s1 disk2@s1
expect_status 2 "appears twice" v snap create --group g disk1@a disk1@b
expect_status 2 "invalid image name" v snap create --group 'b d' disk1@a
expect_status 2 "exactly one '@'" v snap create --group g disk1@a disk2@b@c
expect_status 2 "missing argument" v snap ls
expect_status 2 "invalid image name" v snap ls disk1@s1
expect_status 2 "unknown option '--force'" v snap create disk1@s1 --force
expect_status 2 "missing --from" v diff disk1
expect_status 2 "missing argument" v diff --from s1
expect_status 2 "invalid image name" v diff disk1 --from 's 1'
expect_status 2 "invalid image name" v diff disk1 --from s1 --to '.x'
expect_status 2 "invalid image name" v diff disk1@s1 --from s1
expect_status 2 "unknown command 'clone'" v snap clone disk1@s1
for args in "snap" "snap create" "snap ls" "snap rm" "snap rollback" "diff" \
  "snapshot" "snapshot create" "snapshot rm"; do
  # shellcheck disable=SC2086
  v $args --help >"$TEST_DIR/help" 2>"$TEST_DIR/err" || fail "vbk $args --help"
  [ ! -s "$TEST_DIR/err" ] || fail "vbk $args --help wrote to stderr"
  # "snap" is an alias: the help names the command "snapshot".
  want=$(echo "$args" | sed 's/^snap\b/snapshot/;')
  grep -q "^Usage: vbk \[GLOBAL OPTIONS\] $want" "$TEST_DIR/help" ||
    fail "vbk $args --help: $(cat "$TEST_DIR/help")"
  grep -q "Exit status" "$TEST_DIR/help" || fail "vbk $args --help: exit status"
done
v snap create --help | grep -q -- "--group NAME" || fail "create --help: --group"
v snap create --help | grep -q -- "--host-id ID" || fail "create --help: --host-id"
v snap rollback --help | grep -q -- "--force" || fail "rollback --help: --force"
v diff --help | grep -q -- "--from SNAP" || fail "diff --help: --from"
v --help | grep -q "^  snapshot .*(alias: snap)" || fail "vbk --help lacks snapshot"
v --help | grep -q "^  diff " || fail "vbk --help lacks diff"

# ---- A snapshot taken by the holder ------------------------------------------

v image create disk1 --size 64M
start_blockd pid_a "$sock_a" --host-id host-a
vm_start a "$(uri disk1 "$sock_a")"
qio "$sock_a" disk1 "write -P 0x11 0 16M" "write -P 0x12 40M 4M" \
  "write -P 0x13 60M 64k" "flush"
[ "$(lease_field disk1 host)" = host-a ] || fail "host-a does not hold disk1"
epoch=$(lease_field disk1 epoch)

v snap create disk1@s1 -v >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
  fail "snap create: $(cat "$TEST_DIR/err")"
[ "$(cat "$TEST_DIR/out")" = disk1@s1 ] || fail "snap create printed: $(cat "$TEST_DIR/out")"
grep -Eq 'writes paused [0-9.]+ ms by the holder' "$TEST_DIR/err" ||
  fail "snap create -v: no pause: $(cat "$TEST_DIR/err")"
grep -q "snapshot s1: taken" "$log" || fail "blockd did not take s1: $(tail -5 "$log")"
[ "$(lease_field disk1 host)" = host-a ] && [ "$(lease_field disk1 epoch)" = "$epoch" ] ||
  fail "the lease moved during snap create: $(v lease status disk1)"
# The bytes at snapshot time (nothing writes in between).
qemu-img convert -f raw -O raw "$(uri disk1 "$sock_a")" "$TEST_DIR/s1.raw"

v snap ls disk1 >"$TEST_DIR/ls"
grep -Eq '^NAME +ID +SIZE +TIME$' "$TEST_DIR/ls" || fail "snap ls: $(cat "$TEST_DIR/ls")"
grep -Eq '^s1 +[0-9]+ +64 MiB +[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}$' "$TEST_DIR/ls" ||
  fail "snap ls: $(cat "$TEST_DIR/ls")"
v snap ls disk1 --json | json_check '
len(d) == 1 and set(d[0]) == {"name", "id", "size", "time_ms"}
and d[0]["name"] == "s1" and d[0]["size"] == 64 * M
and isinstance(d[0]["id"], int) and abs(d[0]["time_ms"] - now) < 120000'
expect_status 1 "already has a snapshot 's1'" v snap create disk1@s1
expect_status 1 "nosuch" v snap create nosuch@s1
expect_status 1 "nosuch" v snap ls nosuch

# Writes to objects 2, 5 and 12 (4 MiB each) after the snapshot.
qio "$sock_a" disk1 "write -P 0x21 $((8 * M + 4096)) 4k" \
  "write -P 0x22 $((20 * M)) 64k" "write -P 0x23 $((49 * M)) 1M" "flush"
# A live diff: the holder first logs which 1/32 parts (128 KiB) it saw
# change, so the extents are as fine as between snapshots.
v diff disk1 --from s1 --json | json_check '
d["image"] == "disk1" and d["from"] == "s1" and d["to"] is None
and [(e["offset"], e["length"]) for e in d["extents"]]
    == [(8 * M, 131072), (20 * M, 131072), (49 * M, M)]
and d["changed_bytes"] == 1280 * 1024'
v diff disk1 --from s1 >"$TEST_DIR/diff" 2>"$TEST_DIR/err"
printf '%s\n' "$((8 * M)) $((128 * 1024))" "$((20 * M)) $((128 * 1024))" \
  "$((49 * M)) $((M))" | cmp - "$TEST_DIR/diff" ||
  fail "diff text: $(cat "$TEST_DIR/diff")"
[ ! -s "$TEST_DIR/err" ] || fail "diff without -v wrote to stderr: $(cat "$TEST_DIR/err")"
v diff disk1 --from s1 -v 2>&1 >/dev/null | grep -q "3 extents, 1.2 MiB changed" ||
  fail "diff -v: no summary"
v diff disk1 --from s1 --to s1 --json | json_check 'd["to"] == "s1" and d["extents"] == [] and d["changed_bytes"] == 0'
expect_status 1 "no snapshot 'nope'" v diff disk1 --from nope
expect_status 1 "no snapshot 'nope'" v diff disk1 --from s1 --to nope

# The live image against its model.
cp "$TEST_DIR/s1.raw" "$TEST_DIR/live.raw"
python3 - "$TEST_DIR/live.raw" <<'PY'
import sys
M = 1 << 20
with open(sys.argv[1], "r+b") as f:
    for off, n, val in [(8 * M + 4096, 4096, 0x21), (20 * M, 64 << 10, 0x22),
                        (49 * M, M, 0x23)]:
        f.seek(off); f.write(bytes([val]) * n)
PY
v image export disk1 "$TEST_DIR/export.raw"
qemu-img compare -q -f raw -F raw "$TEST_DIR/live.raw" "$TEST_DIR/export.raw" ||
  fail "vbk image export of the live image differs from the model"
cmp -s "$TEST_DIR/s1.raw" "$TEST_DIR/export.raw" && fail "live image equals the snapshot"

# The snapshot through vbk image export, and through blockd's IMAGE@SNAP
# export.
v image export disk1@s1 "$TEST_DIR/s1-export.raw"
cmp -s "$TEST_DIR/s1.raw" "$TEST_DIR/s1-export.raw" ||
  fail "vbk image export disk1@s1 differs from the copy saved at snapshot time"
if nbdinfo --size "$(uri disk1@s1 "$sock_a")" >/dev/null 2>"$TEST_DIR/err"; then
  snap_exports=1
  nbdinfo "$(uri disk1@s1 "$sock_a")" | grep -q "is_read_only: true" ||
    fail "disk1@s1 is not read-only"
  qemu-img compare -q -f raw -F raw "$TEST_DIR/s1.raw" "$(uri disk1@s1 "$sock_a")" ||
    fail "disk1@s1 through blockd differs from the copy saved at snapshot time"
  qemu-img compare -q -f raw -F raw "$TEST_DIR/live.raw" "$(uri disk1 "$sock_a")" ||
    fail "disk1 through blockd differs from the model"
else
  snap_exports=0
  skipped+=("IMAGE@SNAP exports (vbk-blockd: $(head -1 "$TEST_DIR/err"))")
fi

# ---- Rollback ----------------------------------------------------------------

expect_status 1 "disk1.*open for writing on host-a.*--force" v snap rollback disk1@s1
expect_status 1 "no snapshot 'nope'" v snap rollback disk1@nope
[ "$(lease_field disk1 host)" = host-a ] || fail "refused rollback touched the lease"
v snap rollback disk1@s1 --force 2>"$TEST_DIR/err" ||
  fail "rollback --force: $(cat "$TEST_DIR/err")"
[ "$(lease_field disk1 held)" = False ] || fail "lease held after rollback --force"
v image export disk1 "$TEST_DIR/rb.raw"
qemu-img compare -q -f raw -F raw "$TEST_DIR/s1.raw" "$TEST_DIR/rb.raw" ||
  fail "after rollback the image differs from the snapshot"
# host-a's export was fenced: its client's writes fail; a new client
# gets a fresh export.
if vm a "write 0x99 0 4096"; then
  fail "the fenced export still writes after rollback --force"
fi
vm_stop a
qemu-img compare -q -f raw -F raw "$TEST_DIR/s1.raw" "$(uri disk1 "$sock_a")" ||
  fail "after rollback blockd serves other bytes"
# Rollback rewrites the snapshot's objects: diff may over-report them
# (never under-report), but the objects the snapshot lacks are gone.
v diff disk1 --from s1 --json | json_check '
not any(e["offset"] <= 20 * M < e["offset"] + e["length"]
        or e["offset"] <= 48 * M < e["offset"] + e["length"]
        for e in d["extents"])'

# ---- snap rm frees the copies -------------------------------------------------

before=$(clones)
[ "$before" -ge 3 ] || fail "expected at least 3 clones for s1, found $before"
v snap rm disk1@s1
v snap ls disk1 --json | json_check 'd == []'
for ((i = 0; i < 60; i++)); do
  after=$(clones)
  [ "$after" -eq 0 ] && break
  sleep 0.5          # RADOS trims clones in the background
done
[ "$after" -eq 0 ] || fail "snap rm left $after of $before clones"
expect_status 1 "no snapshot 's1'" v snap rm disk1@s1
expect_status 1 "no snapshot 's1'" v diff disk1 --from s1
expect_status 1 "nosuch" v snap rm nosuch@s1

# ---- Nobody holds the lease: vbk takes it for the moment ----------------------

head -c $((8 * M)) /dev/urandom >"$TEST_DIR/d3.raw"
v image import "$TEST_DIR/d3.raw" disk3
[ "$(lease_field disk3 held)" = False ] || fail "disk3 held before"
e3=$(lease_field disk3 epoch)
v snap create disk3@t0 --host-id cli-test -v >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
  fail "snap create without holder: $(cat "$TEST_DIR/err")"
[ "$(cat "$TEST_DIR/out")" = disk3@t0 ] || fail "printed: $(cat "$TEST_DIR/out")"
grep -Eq 'writes paused [0-9.]+ ms' "$TEST_DIR/err" || fail "no pause: $(cat "$TEST_DIR/err")"
[ "$(lease_field disk3 held)" = False ] || fail "vbk kept the lease of disk3"
[ "$(lease_field disk3 epoch)" -eq $((e3 + 1)) ] || fail "vbk did not take the lease once"
v snap ls disk3 --json | json_check '[s["name"] for s in d] == ["t0"] and d[0]["size"] == 8 * M'
qio "$sock_a" disk3 "write -P 0x31 0 4M" "flush"
v diff disk3 --from t0 --json | json_check '
[(e["offset"], e["length"]) for e in d["extents"]] == [(0, 4 * M)]'
if [ "$snap_exports" = 1 ]; then
  qemu-img compare -q -f raw -F raw "$TEST_DIR/d3.raw" "$(uri disk3@t0 "$sock_a")" ||
    fail "disk3@t0 differs from the imported file"
fi

# ---- Consistency group across two daemons -------------------------------------

v image create g1 --size 16M
v image create g2 --size 16M
start_blockd pid_b "$sock_b" --host-id host-b
vm_start g1 "$(uri g1 "$sock_a")"
vm_start g2 "$(uri g2 "$sock_b")"
qio "$sock_a" g1 "write -P 0x41 0 8M" "flush"
qio "$sock_b" g2 "write -P 0x42 0 8M" "flush"
[ "$(lease_field g1 host)" = host-a ] || fail "host-a does not hold g1"
[ "$(lease_field g2 host)" = host-b ] || fail "host-b does not hold g2"
e1=$(lease_field g1 epoch)
e2=$(lease_field g2 epoch)
v snap create --group vm g1@gs g2@gs -v >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
  fail "group snapshot: $(cat "$TEST_DIR/err")"
printf 'g1@gs\ng2@gs\n' | cmp -s - "$TEST_DIR/out" || fail "group printed: $(cat "$TEST_DIR/out")"
[ "$(lease_field g1 host)" = host-a ] && [ "$(lease_field g1 epoch)" = "$e1" ] ||
  fail "g1's lease moved during the group snapshot"
[ "$(lease_field g2 host)" = host-b ] && [ "$(lease_field g2 epoch)" = "$e2" ] ||
  fail "g2's lease moved during the group snapshot"
# Both daemons write again (they were thawed), after the snapshot.
qio "$sock_a" g1 "write -P 0x51 0 8M" "flush"
qio "$sock_b" g2 "write -P 0x52 4M 8M" "flush"
v snap ls g1 --json | json_check '[s["name"] for s in d] == ["gs"]'
v snap ls g2 --json | json_check '[s["name"] for s in d] == ["gs"]'
v diff g2 --from gs --json | json_check '
[(e["offset"], e["length"]) for e in d["extents"]] == [(4 * M, 8 * M)]'

# Groups that fail leave no snapshot of any member.
expect_status 1 "nosuch" v snap create --group bad g1@x nosuch@x
v snap ls g1 --json | json_check '[s["name"] for s in d] == ["gs"]'
expect_status 1 "gs" v snap create --group bad2 g1@y g2@gs
v snap ls g1 --json | json_check '[s["name"] for s in d] == ["gs"]'
v snap ls g2 --json | json_check '[s["name"] for s in d] == ["gs"]'
# Everything was thawed: both daemons still write.
qio "$sock_a" g1 "write -P 0x61 12M 64k" "flush"
qio "$sock_b" g2 "write -P 0x62 12M 64k" "flush"

# The snapshots hold the bytes from before the group snapshot.
if [ "$snap_exports" = 1 ]; then
  qio "$sock_a" g1@gs "read -P 0x41 0 8M" "read -P 0 8M 8M"
  qio "$sock_b" g2@gs "read -P 0x42 0 8M" "read -P 0 8M 8M"
fi
v snap rollback g1@gs --force 2>/dev/null
v snap rollback g2@gs --force 2>/dev/null
vm g1 "write 0x71 0 4096" && fail "g1's fenced export still writes"
vm g2 "write 0x72 0 4096" && fail "g2's fenced export still writes"
vm_stop g1
vm_stop g2
qio "$sock_a" g1 "read -P 0x41 0 8M" "read -P 0 8M 8M"
qio "$sock_b" g2 "read -P 0x42 0 8M" "read -P 0 8M 8M"
kill -TERM "$pid_a" "$pid_b"
wait "$pid_a" || fail "blockd host-a did not stop cleanly"
wait "$pid_b" || fail "blockd host-b did not stop cleanly"

for s in "${skipped[@]}"; do echo "snap-cli: SKIPPED: $s"; done
echo "snap-cli: OK"
