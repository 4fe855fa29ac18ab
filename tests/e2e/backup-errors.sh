#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-errors.sh - "vbk backup" on bad input (local store): wrong
# command lines (exit 2, one line); no repository, a repository twice, a
# newer repository format; a corrupt, a truncated and a newer-version
# manifest, a truncated index (clear errors naming the backup; the other
# backups list, verify and restore; gc refuses rather than sweep with
# marks missing); ENOSPC part way through a backup (fault: store on the
# repository): the run fails cleanly, nothing is lost, the next backup
# works; restore onto an existing image without --in-place; restore
# --to-file onto an existing file: refused without --force (the file
# untouched), replaced with it; a restore that fails leaves the old file
# and no temporary file behind; --in-place does not go with --to-file.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires python3
requires cmp

store=$(new_store)
repo=$(new_store)
rdir=${repo#local:}
v () { vbk --store "$store" "$@"; }
b () { vbk --store "$store" backup "$@"; }

# ---- Command lines -----------------------------------------------------------------------
expect_status 2 "missing command" b
expect_status 2 "unknown command 'nope'" b nope
expect_status 2 "no repository: give --repo" b ls
export VBK_REPO=$repo
expect_status 2 "missing argument" b run
expect_status 2 "several images at one instant need --group" b run a c
expect_status 2 "invalid image name" b run 'bad/name'
expect_status 2 "chunk-size: invalid chunk size '3K'" b init --chunk-size 3K
expect_status 2 "chunk-size" b init --chunk-size lots
expect_status 2 "exactly one of --to IMAGE and --to-file" b restore x
expect_status 2 "exactly one of --to IMAGE and --to-file" b restore x --to a --to-file f
expect_status 2 "--force goes with --in-place" b restore x --to a --force
expect_status 2 "--in-place goes with --to IMAGE" b restore x --to-file f --in-place
expect_status 2 "invalid backup id 'a/b'" b info a/b
expect_status 2 "--sample: invalid number '0'" b verify --sample 0
expect_status 2 "at least one --keep" b prune
expect_status 2 "--keep-last: invalid number" b prune --keep-last -1
expect_status 2 "--progress: expected" b run d --progress fancy
expect_status 2 "unexpected argument" b gc extra
b run --help | grep -q -- "--cbt-sample" || fail "run --help"
b --help | grep -q "restore" || fail "backup --help"

# ---- Repositories ----------------------------------------------------------------------------
expect_status 1 "no repository \(create one with 'vbk backup init'\)" b ls
b init --chunk-size 64K >/dev/null
expect_status 1 "a repository exists there already" b init
cp "$rdir/obj/vbk_backup_config" "$TEST_DIR/config"
echo '{"format": "3.0", "chunk_size": 65536}' >"$rdir/obj/vbk_backup_config"
expect_status 1 "repository format 3.0 is newer than this vbk supports \(2.x\)" b ls
cp "$TEST_DIR/config" "$rdir/obj/vbk_backup_config"

# ---- Three backups ------------------------------------------------------------------------
head -c $((3 << 20)) /dev/urandom >"$TEST_DIR/a.raw"
v image import "$TEST_DIR/a.raw" d
ids=()
for i in 1 2 3; do
  head -c 100000 /dev/urandom | dd of="$TEST_DIR/a.raw" bs=1 seek=$((i * 500000)) conv=notrunc status=none
  v image rm d && v image import "$TEST_DIR/a.raw" d
  cp "$TEST_DIR/a.raw" "$TEST_DIR/a$i.raw"
  ids+=("$(b run d --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')")
done
expect_status 1 "image 'd' exists \(use --in-place" b restore "${ids[0]}" --to d
expect_status 1 "no image 'zz'" b restore "${ids[0]}" --to zz --in-place
expect_status 1 "no backup 'nope'" b info nope
expect_status 1 "no image 'zz'" b run zz

# ---- Corrupt manifests and indexes -------------------------------------------------------
man () { echo "$rdir/obj/vbk_backup_manifest.$1"; }
idx () { echo "$rdir/obj/vbk_backup_index.$1"; }
cp "$(man "${ids[0]}")" "$TEST_DIR/m0"
# Truncated manifest of backup 1.
head -c 40 "$TEST_DIR/m0" >"$(man "${ids[0]}")"
expect_status 1 "backup ${ids[0]}: manifest: not a JSON object" b info "${ids[0]}"
expect_status 1 "manifest: not a JSON object" b restore "${ids[0]}" --to-file "$TEST_DIR/x" --force
b ls --json >"$TEST_DIR/ls.json" 2>"$TEST_DIR/ls.err" || fail "ls with a corrupt manifest"
grep -q "${ids[0]}" "$TEST_DIR/ls.err" || fail "ls did not warn about the corrupt manifest"
python3 -c 'import json,sys; assert len(json.load(open(sys.argv[1]))) == 2' "$TEST_DIR/ls.json" || fail "ls lost a good backup"
# A newer manifest version.
sed 's/"format": *"1.0"/"format": "7.1"/' "$TEST_DIR/m0" >"$(man "${ids[0]}")"
expect_status 1 "manifest format 7.1 is newer than this vbk reads" b info "${ids[0]}"
# Garbage in a field.
sed 's/"size": *[0-9]*/"size": "big"/' "$TEST_DIR/m0" >"$(man "${ids[0]}")"
expect_status 1 "manifest: missing number \"size\"" b restore "${ids[0]}" --to-file "$TEST_DIR/x" --force
cp "$TEST_DIR/m0" "$(man "${ids[0]}")"
# Truncated index of backup 2.
cp "$(idx "${ids[1]}")" "$TEST_DIR/i1"
head -c 100 "$TEST_DIR/i1" >"$(idx "${ids[1]}")"
expect_status 1 "backup ${ids[1]}: index .* does not match its manifest" b restore "${ids[1]}" --to-file "$TEST_DIR/x" --force
rc=0; b verify >/dev/null 2>"$TEST_DIR/v.err" || rc=$?
[ "$rc" = 1 ] && grep -q "${ids[1]}" "$TEST_DIR/v.err" || fail "verify with a bad index: rc $rc, $(cat "$TEST_DIR/v.err")"
expect_status 1 "does not match its manifest" b gc --clock-skew 0
for i in 0 2; do
  b restore "${ids[$i]}" --to-file "$TEST_DIR/x" --force || fail "restore ${ids[$i]} beside a bad index"
  cmp "$TEST_DIR/x" "$TEST_DIR/a$((i + 1)).raw" || fail "restore ${ids[$i]} differs"
done
cp "$TEST_DIR/i1" "$(idx "${ids[1]}")"
b verify >/dev/null || fail "verify after repair"

# ---- restore --to-file onto an existing file --------------------------------------------------
mkdir "$TEST_DIR/rdir"
echo "precious" >"$TEST_DIR/rdir/f"
expect_status 1 "rdir/f: file exists \(use --force to replace it\)" b restore "${ids[2]}" --to-file "$TEST_DIR/rdir/f"
[ "$(cat "$TEST_DIR/rdir/f")" = precious ] || fail "a refused restore changed the file"
ln -s f "$TEST_DIR/rdir/link"
expect_status 1 "file exists" b restore "${ids[2]}" --to-file "$TEST_DIR/rdir/link"
[ "$(cat "$TEST_DIR/rdir/f")" = precious ] || fail "a refused restore through a link changed the file"
# A restore that fails part way (a chunk gone) leaves the old file whole.
hex=$(python3 -c '
import hashlib, sys
f = open(sys.argv[1], "rb"); f.seek(1 << 20)
print(hashlib.sha256(f.read(64 * 1024)).hexdigest())' "$TEST_DIR/a3.raw")
mv "$rdir/obj/vbk_chunk.$hex" "$TEST_DIR/chunk.saved" || fail "no chunk $hex"
expect_status 1 "vbk_chunk.$hex" b restore "${ids[2]}" --to-file "$TEST_DIR/rdir/f" --force
[ "$(cat "$TEST_DIR/rdir/f")" = precious ] || fail "a failed restore changed the file"
mv "$TEST_DIR/chunk.saved" "$rdir/obj/vbk_chunk.$hex"
[ "$(ls -A "$TEST_DIR/rdir" | sort | tr '\n' ' ')" = "f link " ] ||
  fail "a failed restore left files behind: $(ls -A "$TEST_DIR/rdir")"
b restore "${ids[2]}" --to-file "$TEST_DIR/rdir/f" --force || fail "restore --force"
cmp "$TEST_DIR/rdir/f" "$TEST_DIR/a3.raw" || fail "restore --force differs"
[ "$(ls -A "$TEST_DIR/rdir" | sort | tr '\n' ' ')" = "f link " ] ||
  fail "restore --force left files behind: $(ls -A "$TEST_DIR/rdir")"
b restore "${ids[1]}" --to-file "$TEST_DIR/rdir/new" || fail "restore to a new file"
cmp "$TEST_DIR/rdir/new" "$TEST_DIR/a2.raw" || fail "restore to a new file differs"

# ---- ENOSPC part way through a backup ---------------------------------------------------------
# Fresh data each time, so that every run has chunks to write.
for nth in 1 5 12; do
  head -c $((1 << 20)) /dev/urandom | dd of="$TEST_DIR/a.raw" bs=1M seek=1 conv=notrunc status=none
  v image rm d && v image import "$TEST_DIR/a.raw" d
  expect_status 1 "No space left on device" \
    b run d --repo "fault:op=write,err=ENOSPC,nth=$nth@$repo" --full
done
[ "$(b ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 3 ] ||
  fail "a failed backup is listed"
b verify >/dev/null || fail "verify after ENOSPC"
b run d --json >"$TEST_DIR/run.json" || fail "backup after ENOSPC"
id4=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$TEST_DIR/run.json")
b restore "$id4" --to-file "$TEST_DIR/x" --force && cmp "$TEST_DIR/x" "$TEST_DIR/a.raw" || fail "restore after ENOSPC"
b gc --clock-skew 0 >/dev/null || fail "gc after ENOSPC"
b verify >/dev/null || fail "verify after gc"

# ---- What the repository holds after runs, failed runs and gc ---------------------------------
# Only the objects FORMAT.md lists (besides the local store's own files:
# fenced/, obj-gen, the omap directories' .lock), every index with its
# manifest, no writer object, no reader record left by the restores and
# no lock file.
(cd "$rdir" && find . -type f | sort) >"$TEST_DIR/files"
python3 - "$TEST_DIR/files" <<'PY' || fail "unexpected files in the repository"
import re, sys
ID = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}"
ok = [r"\./obj/vbk_backup_(config|catalog|chunks|readers)",
      r"\./obj/vbk_backup_(index|manifest)\." + ID,
      r"\./obj/vbk_chunk\.[0-9a-f]{64}",
      r"\./meta/vbk_backup_catalog/(\.lock|o\." + ID + ")",
      r"\./meta/vbk_backup_chunks/(\.lock|o\.[0-9a-f]{64})",
      r"\./meta/vbk_backup_readers/\.lock",
      r"\./fenced/\.gen", r"\./obj-gen"]
files = open(sys.argv[1]).read().split()
bad = [f for f in files if not any(re.fullmatch(p, f) for p in ok)]
idx = {f.split(".")[-1] for f in files if "vbk_backup_index." in f}
man = {f.split(".")[-1] for f in files if "vbk_backup_manifest." in f}
chunks = {f.split(".")[-1] for f in files if f.startswith("./obj/vbk_chunk.")}
keys = {f.split("o.")[-1] for f in files if f.startswith("./meta/vbk_backup_chunks/o.")}
if bad or idx != man or chunks != keys:
    sys.exit("unexpected: %s; indexes without manifest: %s; chunks without key: %s; keys without chunk: %s"
             % (bad[:10], idx - man, chunks - keys, keys - chunks))
print("repository files: %d, all expected" % len(files))
PY
echo "backup errors: OK"
