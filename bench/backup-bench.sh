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
# size), the ratio peer time / vbk time, repository sizes (du), and the
# CPU seconds (user + system) per GiB of image of every row.
# With REPEAT=N the full backups (each into a fresh repository) and the
# restores run N times, vbk and the peers interleaved, and the rows show
# the medians (the machine is shared: single runs are noisy).
#
# The physical limit line: what this machine could do for a full backup
# of this image at best, min (read rate, cores x the SHA-256+LZ4 rate,
# repository write rate x image bytes / stored bytes), measured in the
# same run: the read rate is reading the image's allocated objects from
# the store (cat), the per-core rates are `openssl speed -evp sha256` on
# 4 MiB buffers and `lz4 -b1` on a sample of the image's data chunks
# (random and text in the image's mix); holes cost neither, so the CPU
# bound per image byte counts only the data share.  A full backup must
# also write what it stores durably: the repository write rate is
# measured where the repositories live, the way the local: store writes
# chunks (WRITE_MB MiB, default 1024, in 4 MiB files, the writeback of
# each started as it is written, then one sync pass over all of them and
# the directory), and scaled by image bytes / bytes vbk's repository
# holds after the full backup (du).  The line names the term that binds.
# A restore has the same kind of line: min (the write rate of a file,
# cores x the SHA-256+LZ4-decompress rate).
#
# Where the repositories live: in the work directory (TMPDIR, on disk) by
# default, so the disk's write rate is part of the comparison.  REPO_DIR=
# DIR puts all three repositories (vbk, restic, borg) and the write-rate
# test under DIR instead, and REPO_TMPFS=1 under a fresh directory in
# /dev/shm: then the repository write rate is memory's, and the rows
# compare the programs' CPU paths.  Mind the memory: the three
# repositories take about 2.2 x SIZE_GB GiB of RAM on tmpfs (the script
# refuses to start without that much room plus 2 GiB); SIZE_GB=4 fits a
# 24 GiB machine.  The image and the restore target stay in TMPDIR.
# Environment: SIZE_GB, VBK_BIN, TMPDIR, PEERS ("restic borg"), REPEAT (1),
# REPO_DIR, REPO_TMPFS, WRITE_MB (1024).
# This is a benchmark: it prints numbers, it does not assert.

set -euo pipefail

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VBK_BIN=${VBK_BIN:-$SRC/build/bin}
SIZE_GB=${SIZE_GB:-8}
PEERS=${PEERS:-restic borg}
REPEAT=${REPEAT:-1}
WRITE_MB=${WRITE_MB:-1024}
W=$(mktemp -d "${TMPDIR:-/tmp}/vbk-backup-bench.XXXXXX")
R=
BLOCKD=
cleanup () {
  [ -n "$BLOCKD" ] && kill "$BLOCKD" 2>/dev/null && wait "$BLOCKD" 2>/dev/null
  rm -rf "$W"
  [ -n "$R" ] && rm -rf "$R"
}
trap cleanup EXIT

# R: where the three repositories and the write-rate test live.
if [ "${REPO_TMPFS:-0}" = 1 ]; then
  R=$(mktemp -d /dev/shm/vbk-backup-bench-repos.XXXXXX)
elif [ -n "${REPO_DIR:-}" ]; then
  mkdir -p "$REPO_DIR"
  R=$(mktemp -d "$REPO_DIR/vbk-backup-bench-repos.XXXXXX")
else
  R=$W/repos
  mkdir "$R"
fi
need=$(( (SIZE_GB * 22 + 9) / 10 + 2 ))
avail=$(( $(df -Pk "$R" | awk 'NR == 2 { print $4 }') >> 20 ))
if [ "$(stat -f -c %T "$R")" = tmpfs ]; then
  mem=$(( $(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo) >> 20 ))
  [ "$mem" -lt "$avail" ] && avail=$mem
fi
if [ "$avail" -lt "$need" ]; then
  echo "backup-bench: $R has $avail GiB free, the repositories need about $need GiB" >&2
  exit 1
fi

export VBK_STORE=local:$W/store VBK_REPO=local:$R/vbkrepo
export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$W/restic-cache
export BORG_BASE_DIR=$W/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
vbk () { "$VBK_BIN/vbk" "$@"; }
size=$((SIZE_GB << 30))
raw=$W/disk.raw

now () { date +%s.%N; }
du_of () { du -sb "$1" | cut -f1; }
declare -A T C
# timed KEY CMD...: runs CMD, records its seconds in T[KEY] and its CPU
# seconds (user + system, children included) in C[KEY] (a repeated KEY
# keeps every run: "t1,t2,..."; the table shows the median).
timed ()
{
  local key=$1 cmd=$2 t0 t c
  shift 2
  [ "$cmd" = vbk ] && cmd=$VBK_BIN/vbk
  sync
  t0=$(now)
  /usr/bin/time -f "%U %S" -o "$W/cpu.time" "$cmd" "$@"
  t=$(python3 -c "print('%.2f' % ($(now) - $t0))")
  c=$(awk '{ printf "%.2f", $1 + $2 }' "$W/cpu.time")
  T[$key]=${T[$key]:+${T[$key]},}$t
  C[$key]=${C[$key]:+${C[$key]},}$c
  echo "  $key: $t s, CPU $c s" >&2
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

echo "backup-bench: physical limits" >&2
sync
t0=$(now)
find "$W/store/obj" -type f -exec cat {} + >/dev/null
T[read]=$(python3 -c "print('%.3f' % ($(now) - $t0))")
# The data chunks in the image's mix (4 random, 3 text; holes are free).
head -c $((7 << 22)) "$raw" >"$W/sample.bin"
lz4 -b1 -i2 "$W/sample.bin" >"$W/lz4.out" 2>&1 || true
openssl speed -evp sha256 -bytes 4194304 -seconds 2 >"$W/sha.out" 2>/dev/null || true
rm -f "$W/sample.bin"
dd if=/dev/zero of="$W/write.test" bs=4M count=256 conv=fsync 2>"$W/dd.out" || true
rm -f "$W/write.test"
# The repository write rate: 4 MiB files as the local: store creates
# chunks (written, writeback started at once, nothing synced), then one
# sync pass over every file and the directory, as its flush does.
python3 - "$R/write.test" "$WRITE_MB" >"$W/repo-write.out" <<'PY'
import os, sys, time
d, mb = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
buf = os.urandom(4 << 20)
n = max(1, mb // 4)
t0 = time.monotonic()
fds = []
for i in range(n):
    fd = os.open("%s/c%05d" % (d, i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, buf)
    # Starts the writeback of the file's dirty pages without waiting
    # (what sync_file_range(SYNC_FILE_RANGE_WRITE) does for the store).
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    fds.append(fd)
for fd in fds:
    os.fdatasync(fd)
    os.close(fd)
dfd = os.open(d, os.O_RDONLY)
os.fsync(dfd)
os.close(dfd)
t = time.monotonic() - t0
print("%d %.3f" % (n << 22, t))
PY
rm -rf "$R/write.test"
read -r wbytes wsecs <"$W/repo-write.out"
echo "  read the image's objects: ${T[read]} s; file write: $(tail -1 "$W/dd.out")" >&2
echo "  repository write ($R): $((wbytes >> 20)) MiB in 4 MiB files, one sync pass: $wsecs s" >&2

echo "backup-bench: full backups" >&2
for rep in $(seq "$REPEAT"); do
  export VBK_REPO=local:$R/vbkrepo
  rm -rf "$R/vbkrepo" "$R/restic" "$R/borg"
  vbk backup init >/dev/null
  timed vbk_full vbk backup run disk --progress none >/dev/null
  for p in $PEERS; do
    case $p in
      restic) restic -q -r "$R/restic" init >/dev/null
              timed restic_full sh -c "restic -q -r '$R/restic' backup --stdin --stdin-filename disk.raw < '$raw' >/dev/null" ;;
      borg) borg init -e none "$R/borg" >/dev/null
            timed borg_full borg create --read-special --chunker-params fixed,4194304 -C lz4 "$R/borg::full" "$raw" ;;
    esac
  done
done
# What the full backup stored (chunks, registry, index, manifest): the
# bytes the repository write rate must carry.
T[stored_full]=$(du_of "$R/vbkrepo")
T[wbytes]=$wbytes
T[wsecs]=$wsecs

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
    restic) timed restic_incr sh -c "restic -q -r '$R/restic' backup --stdin --stdin-filename disk.raw < '$raw' >/dev/null" ;;
    borg) timed borg_incr borg create --read-special --chunker-params fixed,4194304 -C lz4 "$R/borg::incr" "$raw" ;;
  esac
done
kill "$BLOCKD"; wait "$BLOCKD" 2>/dev/null || true; BLOCKD=

echo "backup-bench: restores" >&2
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$W/incr.json")
for rep in $(seq "$REPEAT"); do
  timed vbk_restore vbk backup restore "$id" --to-file "$W/out.raw" --force --progress none
  [ "$rep" = 1 ] && { cmp "$W/out.raw" "$raw" || echo "backup-bench: WARNING: vbk restore differs" >&2; }
  rm -f "$W/out.raw"
  for p in $PEERS; do
    case $p in
      restic) timed restic_restore sh -c "restic -q -r '$R/restic' dump latest disk.raw > '$W/out.raw'" ;;
      borg) timed borg_restore sh -c "cd '$W' && borg extract --stdout '$R/borg::incr' > '$W/out.raw'" ;;
    esac
    rm -f "$W/out.raw"
  done
done

echo "backup-bench: verify" >&2
timed vbk_verify vbk backup verify >/dev/null
for p in $PEERS; do
  case $p in
    restic) timed restic_verify restic -q -r "$R/restic" check --read-data ;;
    borg) timed borg_verify borg check --verify-data "$R/borg" ;;
  esac
done

declare -A S
S[vbk]=$(du_of "$R/vbkrepo")
for p in $PEERS; do S[$p]=$(du_of "$R/$p"); done

data=$(du -sb "$W/store/obj" | cut -f1)
python3 - "$size" "$PEERS" "$REPEAT" "$data" "$(nproc)" "$W" "${T[@]@K}" "${S[@]@K}" CPU "${C[@]@K}" <<'PY'
import re, statistics, sys
size = int(sys.argv[1]); peers = sys.argv[2].split(); rep = int(sys.argv[3])
data, cores, w = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
kv = " ".join(sys.argv[7:]).split()
d = {}
it = iter(kv)
for k in it:
    if k == "CPU":
        d = {"cpu": d}
        continue
    d[k] = next(it).strip('"')
cpu, d = d, d.pop("cpu")
def med(key):
    return statistics.median(float(x) for x in d[key].split(","))
rows = [("full backup", "full"), ("incremental (1% changed)", "incr"),
        ("full restore", "restore"), ("verify", "verify")]
print("backup-bench: %d GiB image (40%% random, 30%% text, 30%% holes)%s"
      % (size >> 30, ", medians of %d runs (full backup, restore)" % rep if rep > 1 else ""))
hdr = "%-26s %10s" % ("", "vbk s (MB/s)")
for p in peers:
    hdr += " %18s %8s" % (p + " s (MB/s)", p + "/vbk")
print(hdr)
for name, key in rows:
    v = med("vbk_" + key)
    line = "%-26s %6.2f (%4d)" % (name, v, size / v / 1e6)
    for p in peers:
        x = med(p + "_" + key)
        line += "   %7.2f (%5d) %7.2fx" % (x, size / x / 1e6, x / v)
    print(line)
line = "%-26s %12s" % ("repository size", "%.2f GiB" % (int(d["vbk"]) / 2**30))
for p in peers:
    line += "   %17s %8.2fx" % ("%.2f GiB" % (int(d[p]) / 2**30), int(d[p]) / int(d["vbk"]))
print(line)
# CPU seconds (user + system) per GiB of image: a loaded machine moves
# this much less than the elapsed time.
line = "%-26s" % "CPU s per GiB: vbk"
for name, key in rows:
    line += "  %s %.2f" % (key, statistics.median(
        float(x) for x in cpu["vbk_" + key].split(",")) / (size / 2**30))
print(line)
for p in peers:
    line = "%-26s" % ("CPU s per GiB: " + p)
    for name, key in rows:
        line += "  %s %.2f" % (key, statistics.median(
            float(x) for x in cpu[p + "_" + key].split(",")) / (size / 2**30))
    print(line)

# Physical limits, from the rates measured at the start of this run.
def grab(path, rx, conv=float):
    try:
        m = re.findall(rx, open(path, errors="replace").read())
        return conv(m[-1]) if m else None
    except OSError:
        return None
sha = grab(w + "/sha.out", r"sha256\s+([\d.]+)k")
sha = sha * 1000 if sha else None                      # bytes/s, one core
lz = re.findall(r"\(([\d.]+)\),\s*([\d.]+) MB/s\s*,\s*([\d.]+) MB/s",
                open(w + "/lz4.out", errors="replace").read().replace("\r", "\n"))
lzc, lzd = (float(lz[-1][1]) * 1e6, float(lz[-1][2]) * 1e6) if lz else (None, None)
m = re.findall(r"s, ([\d.]+) ([GM])B/s", open(w + "/dd.out").read())
wr = float(m[-1][0]) * (1e9 if m[-1][1] == "G" else 1e6) if m else None
rd = data / float(d["read"])
frac = data / size                                     # share that is data
# The repository write rate, scaled to image bytes: a full backup writes
# stored_full bytes for SIZE bytes of image.
rw = int(d["wbytes"]) / float(d["wsecs"])
stored = int(d["stored_full"])
rwi = rw * size / stored
if sha and lzc:
    cpu = cores / (frac * (1 / sha + 1 / lzc))          # image bytes/s
    terms = {"read": rd / frac, "CPU": cpu, "write": rwi}
    lim = min(terms.values())
    bind = min(terms, key=terms.get)
    v = med("vbk_full")
    print("physical limit, full backup: %d MB/s = min(read %d MB/s, %d cores x "
          "(SHA-256 %d MB/s + LZ4 %d MB/s per core) on %d%% data = %d MB/s, "
          "repository write %d MB/s x image/stored (%.2f/%.2f GiB) = %d MB/s): "
          "%s-bound; vbk %d MB/s = %.0f%% of it"
          % (lim / 1e6, rd / frac / 1e6, cores, sha / 1e6, lzc / 1e6,
             frac * 100, cpu / 1e6, rw / 1e6, size / 2**30, stored / 2**30,
             rwi / 1e6, bind, size / v / 1e6, size / v / lim * 100))
if sha and lzd and wr:
    cpu = cores / (frac * (1 / sha + 1 / lzd))
    lim = min(wr / frac, cpu)
    v = med("vbk_restore")
    print("physical limit, restore:     %d MB/s = min(write %d MB/s, %d cores x "
          "(SHA-256 %d MB/s + LZ4 decompress %d MB/s per core) on %d%% data "
          "= %d MB/s); vbk %d MB/s = %.0f%% of it"
          % (lim / 1e6, wr / frac / 1e6, cores, sha / 1e6, lzd / 1e6,
             frac * 100, cpu / 1e6, size / v / 1e6, size / v / lim * 100))
PY
cat "$W/incr.json" | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print("vbk incremental: read %d of %d chunks, %d new chunks, %d bytes stored" % (r["chunks_read"], r["chunks"], r["chunks_new"], r["bytes_stored"]))'
