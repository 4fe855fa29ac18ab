#!/bin/bash
# SPDX-License-Identifier: MIT
#
# backup-bench.sh - vbk backup against restic and borg, in the same run.
#
# A disk image of SIZE_GB GiB (default 8): per 4 MiB chunk, 40% random
# data, 30% text (LZ4 ~2x; every line tagged with its chunk, so nothing
# deduplicates) and 30% never written.  Rows:
#   full backup         vbk backup run (first: reads allocated extents) |
#                       restic backup --stdin | borg create --read-special
#                       --chunker-params fixed,4194304 -C lz4
#   incremental         after 1% of the image changed in 256 KiB pieces
#                       scattered at random (vbk reads what changed; the
#                       peers re-read the whole image)
#   full restore        vbk backup restore --to-file | restic dump |
#                       borg extract --stdout (all into a file on /tmp)
#   verify              vbk backup verify | restic check --read-data |
#                       borg check --verify-data
# The image lives in a local: store (vbk), the peers read the same bytes
# from a raw file on the same disk.  Prints seconds, MB/s (of the image
# size), the ratio peer time / vbk time, and repository sizes (du).
# Environment: SIZE_GB, VBK_BIN, TMPDIR, PEERS ("restic borg").
# This is a benchmark: it prints numbers, it does not assert.

set -euo pipefail

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VBK_BIN=${VBK_BIN:-$SRC/build/bin}
SIZE_GB=${SIZE_GB:-8}
PEERS=${PEERS:-restic borg}
W=$(mktemp -d "${TMPDIR:-/tmp}/vbk-backup-bench.XXXXXX")
BLOCKD=
cleanup () {
  [ -n "$BLOCKD" ] && kill "$BLOCKD" 2>/dev/null && wait "$BLOCKD" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT

export VBK_STORE=local:$W/store VBK_REPO=local:$W/vbkrepo
export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$W/restic-cache
export BORG_BASE_DIR=$W/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
vbk () { "$VBK_BIN/vbk" "$@"; }
size=$((SIZE_GB << 30))
raw=$W/disk.raw

now () { date +%s.%N; }
declare -A T
# timed KEY CMD...: runs CMD, records its seconds in T[KEY].
timed ()
{
  local key=$1 t0
  shift
  sync
  t0=$(now)
  "$@"
  T[$key]=$(python3 -c "print('%.2f' % ($(now) - $t0))")
  echo "  $key: ${T[$key]} s" >&2
}

echo "backup-bench: building a $SIZE_GB GiB image (40% random, 30% text, 30% holes)" >&2
python3 - "$raw" "$size" <<'PY'
import os, random, sys
path, size = sys.argv[1], int(sys.argv[2])
C = 4 << 20
rnd = random.Random(1)
words = [bytes(rnd.choice(b"etaoinshrdlucmfwypvbgkjqxz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]
base = bytearray()
while len(base) < C + (1 << 20):
    base += b" ".join(rnd.choice(words) for _ in range(rnd.randint(6, 14))) + b"\n"
base = bytes(base)
with open(path, "wb") as f:
    f.truncate(size)
    for i in range(size // C):
        k = i % 10
        if k < 4:
            f.seek(i * C); f.write(os.urandom(C))
        elif k < 7:
            t = base.replace(b"\n", b"\n%08x " % i)[:C]
            f.seek(i * C); f.write(t)
PY
vbk image import "$raw" disk >/dev/null
vbk backup init >/dev/null
echo "backup-bench: full backups" >&2
timed vbk_full vbk backup run disk --progress none >/dev/null
for p in $PEERS; do
  case $p in
    restic) restic -q -r "$W/restic" init >/dev/null
            timed restic_full sh -c "restic -q -r '$W/restic' backup --stdin --stdin-filename disk.raw < '$raw' >/dev/null" ;;
    borg) borg init -e none "$W/borg" >/dev/null
          timed borg_full borg create --read-special --chunker-params fixed,4194304 -C lz4 "$W/borg::full" "$raw" ;;
  esac
done

echo "backup-bench: changing 1% of the image" >&2
rm -f "$W/blockd.sock"
"$VBK_BIN/vbk-blockd" --store "$VBK_STORE" --socket "$W/blockd.sock" --host-id bench 2>"$W/blockd.log" &
BLOCKD=$!
for i in $(seq 100); do [ -S "$W/blockd.sock" ] && break; sleep 0.05; done
PATH=/usr/bin:$PATH /usr/bin/python3 - "$raw" "$size" "nbd+unix:///disk?socket=$W/blockd.sock" <<'PY'
import nbd, os, random, sys
path, size, uri = sys.argv[1], int(sys.argv[2]), sys.argv[3]
P = 256 << 10
n = size // 100 // P
rnd = random.Random(2)
h = nbd.NBD(); h.connect_uri(uri)
with open(path, "r+b") as f:
    for _ in range(n):
        off = rnd.randrange(0, size // P) * P
        d = os.urandom(P)
        h.pwrite(d, off)
        f.seek(off); f.write(d)
h.flush(); h.shutdown()
PY
echo "backup-bench: incremental backups" >&2
timed vbk_incr vbk backup run disk --progress none --json >"$W/incr.json"
for p in $PEERS; do
  case $p in
    restic) timed restic_incr sh -c "restic -q -r '$W/restic' backup --stdin --stdin-filename disk.raw < '$raw' >/dev/null" ;;
    borg) timed borg_incr borg create --read-special --chunker-params fixed,4194304 -C lz4 "$W/borg::incr" "$raw" ;;
  esac
done
kill "$BLOCKD"; wait "$BLOCKD" 2>/dev/null || true; BLOCKD=

echo "backup-bench: restores" >&2
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$W/incr.json")
timed vbk_restore vbk backup restore "$id" --to-file "$W/out.raw" --force --progress none
cmp "$W/out.raw" "$raw" || echo "backup-bench: WARNING: vbk restore differs" >&2
rm -f "$W/out.raw"
for p in $PEERS; do
  case $p in
    restic) timed restic_restore sh -c "restic -q -r '$W/restic' dump latest disk.raw > '$W/out.raw'" ;;
    borg) timed borg_restore sh -c "cd '$W' && borg extract --stdout '$W/borg::incr' > '$W/out.raw'" ;;
  esac
  rm -f "$W/out.raw"
done

echo "backup-bench: verify" >&2
timed vbk_verify vbk backup verify >/dev/null
for p in $PEERS; do
  case $p in
    restic) timed restic_verify restic -q -r "$W/restic" check --read-data ;;
    borg) timed borg_verify borg check --verify-data "$W/borg" ;;
  esac
done

du_of () { du -sb "$1" | cut -f1; }
declare -A S
S[vbk]=$(du_of "$W/vbkrepo")
for p in $PEERS; do S[$p]=$(du_of "$W/$p"); done

python3 - "$size" "$PEERS" "${T[@]@K}" "${S[@]@K}" <<'PY'
import sys
size = int(sys.argv[1]); peers = sys.argv[2].split()
kv = " ".join(sys.argv[3:]).split()
d = {}
it = iter(kv)
for k in it:
    d[k] = next(it).strip('"')
rows = [("full backup", "full"), ("incremental (1% changed)", "incr"),
        ("full restore", "restore"), ("verify", "verify")]
print("backup-bench: %d GiB image (40%% random, 30%% text, 30%% holes)" % (size >> 30))
hdr = "%-26s %10s" % ("", "vbk s (MB/s)")
for p in peers:
    hdr += " %18s %8s" % (p + " s (MB/s)", p + "/vbk")
print(hdr)
for name, key in rows:
    v = float(d["vbk_" + key])
    line = "%-26s %6.2f (%4d)" % (name, v, size / v / 1e6)
    for p in peers:
        x = float(d[p + "_" + key])
        line += "   %7.2f (%5d) %7.2fx" % (x, size / x / 1e6, x / v)
    print(line)
line = "%-26s %12s" % ("repository size", "%.2f GiB" % (int(d["vbk"]) / 2**30))
for p in peers:
    line += "   %17s %8.2fx" % ("%.2f GiB" % (int(d[p]) / 2**30), int(d[p]) / int(d["vbk"]))
print(line)
PY
cat "$W/incr.json" | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print("vbk incremental: read %d of %d chunks, %d new chunks, %d bytes stored" % (r["chunks_read"], r["chunks"], r["chunks_new"], r["bytes_stored"]))'
