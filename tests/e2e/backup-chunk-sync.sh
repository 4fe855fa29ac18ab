#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-chunk-sync.sh - "vbk backup run" writes its chunks without a sync
# each and makes them durable with one flush, before the registry claims
# them (local store; backup/FORMAT.md, "Order of writes and crashes").
#
# vbk runs with the sync interposer (tests/shim/syncshim.c, LD_PRELOAD)
# driven by a control file; it logs every sync of the files it matches and
# fails them when told to.  The image: 8 MiB of random data in 1 MiB
# objects, backed up in 64 KiB chunks (128 new chunks a run).
#   - A full backup syncs the repository's obj/ directory a few times
#     (the flush, the index, the manifest, the writer object), not once
#     per chunk, and each chunk file exactly once (in the flush).
#   - When the syncs of the chunk files fail, the run fails with one line
#     naming the flush and a chunk; no backup is listed, and not one of
#     its chunks is claimed in the registry: every key still says "new".
#   - What a power loss may leave of chunks written but not flushed is
#     played on those chunks: one emptied, one cut short, one zeroed, one
#     with a byte flipped.  verify stays clean (no backup uses them), and
#     the next run writes each of them again: it succeeds, every key is
#     claimed, its restore equals the image and verify (which reads every
#     chunk it uses, checking sizes, CRC-32 and digest) finds nothing bad.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp
requires_syncshim

store=local:$(mktemp -d "$TEST_DIR/store.XXXXXX")
rroot=$(mktemp -d "$TEST_DIR/repo.XXXXXX")
export VBK_REPO=local:$rroot
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }
count () { b ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# registry STATE: the number of registry keys in STATE (claimed, bad, new).
registry ()
{
  local d=$rroot/meta/vbk_backup_chunks n=0 f val
  for f in "$d"/o.*; do
    [ -e "$f" ] || continue
    val=$(cat "$f")
    case $1:$val in
      new:"bad "*" new") n=$((n + 1)) ;;
      bad:"bad "*" new") ;;
      bad:"bad "*) n=$((n + 1)) ;;
      claimed:bad*) ;;
      claimed:*) n=$((n + 1)) ;;
    esac
  done
  echo $n
}

head -c $((8 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
v image import --object-size 1M "$TEST_DIR/a.raw" d || fail "import"
b init --chunk-size 64K >/dev/null || fail "init"

# ---- One flush for all the chunks ------------------------------------------------
syncshim "$rroot/obj" 0 b run d --json >"$TEST_DIR/run.json" || fail "backup run"
dirs=$(awk -v d="$rroot/obj" '$2 == "start" && $3 == d' "$SYNC_LOG" | wc -l)
files=$(grep -c " start $rroot/obj/vbk_chunk\." "$SYNC_LOG" || true)
echo "full backup of 128 chunks: obj/ synced $dirs times, chunk files $files times"
[ "$dirs" -le 8 ] || fail "obj/ was synced $dirs times for 128 new chunks (once per chunk?)"
[ "$files" = 128 ] || fail "$files syncs of chunk files, expected 128 (each once, in the flush)"
awk '$2 == "start" { n[$3]++ } END { for (p in n) if (n[p] > 1 && p ~ /vbk_chunk/) { print p, n[p]; bad = 1 } exit bad }' \
  "$SYNC_LOG" || fail "a chunk file was synced more than once: $(cat "$SYNC_LOG")"
[ "$(registry claimed)" = 128 ] || fail "$(registry claimed) of 128 chunks claimed"
[ "$(registry new)" = 0 ] || fail "$(registry new) chunks left unclaimed"

# ---- A failed flush claims nothing --------------------------------------------------
head -c $((8 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
v image rm d && v image import --object-size 1M "$TEST_DIR/a.raw" d || fail "reimport"
syncshim "$rroot/obj/vbk_chunk." 5 expect_status 1 "flushing chunks: .*vbk_chunk\..*Input/output error" \
  b run d
grep -q " fail $rroot/obj/vbk_chunk\." "$SYNC_LOG" || fail "no failed sync: $(cat "$SYNC_LOG")"
[ "$(count)" = 1 ] || fail "the failed run is listed"
[ "$(registry new)" = 128 ] ||
  fail "after a failed flush $(registry new) of 128 new chunks are unclaimed"
[ "$(registry claimed)" = 128 ] || fail "the first run's chunks changed state"
n=$(ls "$rroot/obj" | grep -c '^vbk_backup_index\.' || true)
[ "$n" = 1 ] || fail "$n indexes after one good and one failed run: $(ls "$rroot/obj")"
echo "a failed flush: the run fails, its 128 chunks stay unclaimed"

# ---- Torn chunks, as a power loss may leave them --------------------------------------
mapfile -t new < <(grep -l ' new$' "$rroot"/meta/vbk_backup_chunks/o.* | head -4 |
                   sed 's|.*/o\.|vbk_chunk.|')
[ "${#new[@]}" = 4 ] || fail "expected 4 unclaimed chunks, found ${#new[@]}"
: >"$rroot/obj/${new[0]}"
truncate -s 100 "$rroot/obj/${new[1]}"
sz=$(stat -c %s "$rroot/obj/${new[2]}")
head -c "$sz" /dev/zero >"$rroot/obj/${new[2]}"
python3 - "$rroot/obj/${new[3]}" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x10
open(p, "wb").write(bytes(b))
PY
b verify >"$TEST_DIR/v.out" 2>&1 || fail "verify with torn unclaimed chunks: $(cat "$TEST_DIR/v.out")"

b run d --json >"$TEST_DIR/run.json" || fail "the run after the failed one"
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TEST_DIR/run.json")
[ "$(registry new)" = 0 ] || fail "$(registry new) chunks still unclaimed after a good run"
[ "$(registry claimed)" = 256 ] || fail "$(registry claimed) of 256 chunks claimed"
b restore "$id" --to-file "$TEST_DIR/r.raw" --force || fail "restore $id"
cmp "$TEST_DIR/r.raw" "$TEST_DIR/a.raw" || fail "the restore differs from the image"
b verify >"$TEST_DIR/v.out" 2>&1 || fail "verify: $(cat "$TEST_DIR/v.out")"
echo "torn unclaimed chunks (empty, short, zeroed, flipped): written again by the next run"
echo "backup-chunk-sync: ok"
