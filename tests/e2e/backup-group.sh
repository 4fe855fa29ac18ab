#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-group.sh - "vbk backup run A B --group G" (local store): one
# consistency-group snapshot for both images, one backup each with the
# group and tags in its manifest, both restore byte-equal; a second group
# run is incremental for both; a group with a missing image fails and
# leaves neither a backup nor a snapshot behind.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp

store=$(new_store)
export VBK_REPO=$(new_store)
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }

b init --chunk-size 64K >/dev/null
head -c $((2 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
head -c $((3 << 20)) /dev/urandom >"$TEST_DIR/c.raw"
v image import "$TEST_DIR/a.raw" a
v image import "$TEST_DIR/c.raw" c
b run a c --group vm1 --tag nightly,test --json >"$TEST_DIR/run.json" || fail "group backup"
python3 - "$TEST_DIR/run.json" <<'PY' || fail "group result: $(cat "$TEST_DIR/run.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert [x["image"] for x in r] == ["a", "c"], r
assert all(x["full"] for x in r), r
PY
for img in a c; do
  id=$(python3 -c 'import json,sys; print([x["id"] for x in json.load(open(sys.argv[1])) if x["image"] == sys.argv[2]][0])' "$TEST_DIR/run.json" $img)
  b info "$id" --json | json_check 'd["group"] == "vm1" and d["tags"] == ["nightly", "test"]'
  b restore "$id" --to-file "$TEST_DIR/out" --force || fail "restore $id"
  cmp "$TEST_DIR/out" "$TEST_DIR/$img.raw" || fail "group restore of $img differs"
done
b run a c --group vm1 --json >"$TEST_DIR/run2.json" || fail "second group backup"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert not any(x["full"] for x in r), r' "$TEST_DIR/run2.json" ||
  fail "second group backup not incremental: $(cat "$TEST_DIR/run2.json")"
n=$(b ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
expect_status 1 "" b run a nosuch --group vm1
[ "$(b ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$n" ] || fail "a failed group left a backup"
[ "$(v snap ls a | grep -c vbkbk-)" = 1 ] || fail "a failed group left a snapshot: $(v snap ls a)"
echo "backup group: OK"
