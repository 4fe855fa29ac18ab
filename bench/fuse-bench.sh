#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuse-bench.sh - speeds of "vbk mount" beside its peers, measured in the
# same run (a benchmark, not a test: it prints numbers, asserts nothing).
#
#   bench/fuse-bench.sh [--store local|rados] [--size-gib N]
#
# The disk: GPT, one ext4 partition holding a 1 GiB file of random bytes
# and 10,000 small files in 100 directories; imported and snapshotted.
# Measured, for each reader, on a fresh mount (cold caches):
#   mount->first byte   from starting the mount to the first byte of disk
#   disk seq            dd of the whole disk, 1 MiB reads
#   file seq            dd of the 1 GiB file inside ext4
#   4k rand QD1         fio psync randread over the disk, p50 / p99
#   4k hot p50          the same over 32 MiB of the disk read just before
#                       (cached: in the kernel's page cache or the mount's)
#   ls -R 10k           ls -lR of the 10,000 files
#   cpu ms/MB           CPU time (user + system) of the serving processes
#                       (the FUSE daemon, and vbk-blockd for nbdfuse) per MB
#                       read by disk seq and file seq together: less
#                       disturbed by other load on the machine than speeds
# Readers:
#   vbk mount           this project (snapshot, and a backup if --repo)
#   nbdfuse             the same snapshot exported by vbk-blockd, read with
#                       nbdfuse (disk); files through the kernel's ext4 on a
#                       loop device over nbdfuse's file (root only)
#   restic mount        the raw disk backed up with restic, its mount; files
#                       and listing as for nbdfuse (kernel ext4 on a loop
#                       device over the mounted disk.raw, root only)
#   borg mount          the same with borg (needs python3-llfuse)
# Knobs (environment):
#   VBK_BIN_BASE=DIR    another build's bin/ (e.g. before a change): the
#                       backup rows are measured with both, interleaved,
#                       the other build's rows marked "base"; that build
#                       backs the disk up into a repository of its own
#                       (an older vbk may not read this one's format)
#   FUSE_BENCH_ONLY=backups  only the backup rows (vbk, restic, borg):
#                       no snapshot and nbdfuse rows; =vbk: only vbk's
#                       backup rows (with VBK_BIN_BASE: before/after)
# The size of each repository (bytes stored, local store) is printed
# after its backup.
#   FUSE_BENCH_REPS=N   the vbk backup rows N times (default 1), for
#                       medians on a shared machine
#   FUSE_BENCH_RA_KB=K  one more backup row per repetition with the
#                       kernel's readahead of the mount set to K KiB
#                       (128: what a user who is not root gets; root only)
# A rados store needs CEPH_CONF and VBK_TEST_POOL (deploy/ceph-dev-cluster.sh).
set -euo pipefail

VBK_SRC=$(cd "$(dirname "$0")/.." && pwd)
VBK_BIN=${VBK_BIN:-$VBK_SRC/build/bin}
VBK_BIN_BASE=${VBK_BIN_BASE:-}
reps=${FUSE_BENCH_REPS:-1}
only=${FUSE_BENCH_ONLY:-}
ra_kb=${FUSE_BENCH_RA_KB:-}
PATH=$PATH:/usr/sbin:/sbin
kind=local
size_gib=2
cpu_pids=
while [ $# -gt 0 ]; do
  case $1 in
    --store) kind=$2; shift 2 ;;
    --size-gib) size_gib=$2; shift 2 ;;
    *) echo "usage: $0 [--store local|rados] [--size-gib N]" >&2; exit 2 ;;
  esac
done

W=$(mktemp -d "${TMPDIR:-/tmp}/vbk-fuse-bench.XXXXXX")
pids=()
mounts=()
cleanup ()
{
  local m p
  for m in "${mounts[@]}"; do
    umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

case $kind in
  local) store=local:$W/store; repo=local:$W/repo ;;
  rados) store="rados:${VBK_TEST_POOL:-vbk}/bench-$$?conf=$CEPH_CONF"
         repo="rados:${VBK_TEST_POOL:-vbk}/bench-repo-$$?conf=$CEPH_CONF" ;;
  *) echo "unknown store kind $kind" >&2; exit 2 ;;
esac
v () { "$VBK_BIN/vbk" --store "$store" "$@"; }
now () { date +%s.%N; }
secs () { python3 -c "print('%.3f' % ($2 - $1))"; }
mbps () { python3 -c "print('%.0f' % ($1 / 1048576 / ($3 - $2)))"; }

# ---- The disk ------------------------------------------------------------------

echo "# preparing a ${size_gib} GiB disk ($kind store) in $W" >&2
mkdir -p "$W/src/many"
head -c 1G /dev/urandom >"$W/src/big.bin"
python3 - "$W/src/many" <<'EOF'
import os, sys
for d in range(100):
    p = os.path.join(sys.argv[1], "d%03d" % d)
    os.mkdir(p)
    for f in range(100):
        with open(os.path.join(p, "f%03d" % f), "w") as fh:
            fh.write("file %d/%d\n" % (d, f) * 20)
EOF
fs_mib=$((size_gib * 1024 - 2))
mke2fs -q -t ext4 -b 4096 -d "$W/src" "$W/fs.img" "${fs_mib}M"
truncate -s "${size_gib}G" "$W/disk.raw"
printf 'label: gpt\nstart=2048, size=%d, type=linux\n' $((fs_mib * 2048)) |
  sfdisk -q "$W/disk.raw" >/dev/null
dd if="$W/fs.img" of="$W/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm "$W/fs.img"
v image import "$W/disk.raw" bench >/dev/null
v snap create bench@s >/dev/null
part_off=$((2048 * 512))

# Cold reads without touching the machine's other caches (others work
# here): each reader is mounted afresh, and before each measurement the
# page cache of the files it reads is dropped (dd iflag=nocache count=0:
# posix_fadvise DONTNEED, which FUSE honours), as is a loop device's.
drop ()
{
  local f
  for f; do
    [ -n "$f" ] && dd if="$f" iflag=nocache count=0 status=none 2>/dev/null || true
  done
  [ -n "${loopdev:-}" ] && blockdev --flushbufs "$loopdev" 2>/dev/null || true
}

# CPU time in clock ticks (user + system, all threads) of the processes in
# $cpu_pids.
cpu_ticks ()
{
  local p t=0 f
  for p in $cpu_pids; do
    f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

# The pid of the process whose command line holds "mount", later DIR.
mount_pid ()
{
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qE -- " mount (.* )?$1( |\$)" &&
      { echo "${p#/proc/}"; return 0; }
  done
  return 0
}

# measure NAME DISK FILE LSDIR: prints one line of numbers.  The order
# (listing, file, disk, random) keeps each measurement off the caches the
# one before filled.
measure ()
{
  local name=$1 disk=$2 file=$3 lsdir=$4 t0 t1 seq fseq lsr p50 p99 hot
  local c0 c1 ctick=0 mb=0 cpu=-
  lsr=- fseq=-
  if [ -n "$lsdir" ]; then
    drop "$disk"
    t0=$(now); ls -lR "$lsdir" >/dev/null; t1=$(now)
    lsr=$(secs "$t0" "$t1")
  fi
  if [ -n "$file" ]; then
    drop "$disk" "$file"
    c0=$(cpu_ticks)
    t0=$(now); dd if="$file" of=/dev/null bs=1M status=none; t1=$(now)
    c1=$(cpu_ticks)
    ctick=$((c1 - c0)) mb=1024
    fseq=$(mbps $((1 << 30)) "$t0" "$t1")
  fi
  drop "$disk"
  c0=$(cpu_ticks)
  t0=$(now); dd if="$disk" of=/dev/null bs=1M status=none; t1=$(now)
  c1=$(cpu_ticks)
  ctick=$((ctick + c1 - c0)) mb=$((mb + size_gib * 1024))
  seq=$(mbps $((size_gib << 30)) "$t0" "$t1")
  [ -n "$cpu_pids" ] &&
    cpu=$(python3 -c "print('%.2f' % ($ctick * 1000.0 / $(getconf CLK_TCK) / $mb))")
  drop "$disk"
  fio --name=r --filename="$disk" --ioengine=psync --rw=randread --bs=4k \
    --iodepth=1 --time_based --runtime=5 --ramp_time=1 --readonly \
    --output-format=json --output="$W/fio.json" >/dev/null 2>&1 || true
  read -r p50 p99 < <(python3 - "$W/fio.json" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
d = json.loads(t[t.index("{"):])
p = d["jobs"][0]["read"]["clat_ns"]["percentile"]
print("%.0f %.0f" % (p["50.000000"] / 1000, p["99.000000"] / 1000))
EOF
  ) || { p50=-; p99=-; }
  dd if="$disk" of=/dev/null bs=1M skip=1 count=32 status=none
  fio --name=h --filename="$disk" --ioengine=psync --rw=randread --bs=4k \
    --offset=1M --size=32M --iodepth=1 --time_based --runtime=3 --ramp_time=1 \
    --readonly --output-format=json --output="$W/fio.json" >/dev/null 2>&1 || true
  hot=$(python3 - "$W/fio.json" <<'EOF'
import json, sys
t = open(sys.argv[1]).read()
d = json.loads(t[t.index("{"):])
print("%.0f" % (d["jobs"][0]["read"]["clat_ns"]["percentile"]["50.000000"] / 1000))
EOF
  ) || hot=-
  printf '%-22s %10s %10s %10s %10s %10s %10s %10s %10s\n' "$name" \
    "${first:--}" "$seq" "$fseq" "$p50" "$p99" "$hot" "$lsr" "$cpu"
}

# measure_kernel_ext4 NAME DISK: measure, with the file and the listing
# read through the kernel's ext4 on a loop device over DISK (root only;
# else without them).
measure_kernel_ext4 ()
{
  local file= lsdir=
  if [ "$(id -u)" = 0 ] && loopdev=$(losetup -r -f --show -o "$part_off" "$2" 2>/dev/null); then
    mkdir -p "$W/mnt-ext4"
    if mount -t ext4 -o ro,noload "$loopdev" "$W/mnt-ext4"; then
      mounts=("$W/mnt-ext4" "${mounts[@]}")
      file=$W/mnt-ext4/big.bin
      lsdir=$W/mnt-ext4/many
    fi
  fi
  measure "$1" "$2" "$file" "$lsdir"
  [ -n "$file" ] && umount "$W/mnt-ext4"
  [ -n "${loopdev:-}" ] && losetup -d "$loopdev" && loopdev=
  return 0
}

printf '%-22s %10s %10s %10s %10s %10s %10s %10s %10s\n' reader "first-s" \
  "disk-MB/s" "file-MB/s" "4k-p50-us" "4k-p99-us" "hot-p50-us" "ls-R-s" \
  "cpu-ms/MB"

# ---- vbk mount (snapshot) ----------------------------------------------------------

# run_vbk PATH LABEL [BIN [RA_KB]]: a fresh mount by BIN/vbk (default
# $VBK_BIN), its kernel readahead set to RA_KB if given.
run_vbk ()
{
  local m=$W/mnt-vbk t0 t1 S bin=${3:-$VBK_BIN}
  mkdir -p "$m"
  t0=$(now)
  "$bin/vbk" --store "$store" mount "$m" ${repo_arg:+--repo "$repo_arg"}
  mounts+=("$m")
  if [ -n "${4:-}" ]; then
    echo "$4" >"/sys/class/bdi/$(mountpoint -d "$m")/read_ahead_kb" ||
      echo "# could not set the readahead of $m" >&2
  fi
  S=$m/$1
  head -c 1 "$S/disk" >/dev/null
  t1=$(now)
  first=$(secs "$t0" "$t1")
  cpu_pids=$(mount_pid "$m")
  measure "vbk mount ($2)" "$S/disk" "$S/files/p1/big.bin" "$S/files/p1/many"
  "$bin/vbk" umount "$m"
  sleep 0.5
}
# repo_size DIR: bytes stored under DIR (a local store or another tool's
# repository), or "-".
repo_size ()
{
  [ -d "$1" ] && du -sb "$1" | cut -f1 || echo -
}

repo_arg=
if [ -z "$only" ]; then
run_vbk images/bench/snapshots/s snapshot

# ---- nbdfuse of the same snapshot through vbk-blockd ---------------------------------

"$VBK_BIN/vbk-blockd" --store "$store" --socket "$W/blockd.sock" 2>"$W/blockd.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$W/blockd.sock" ] && break; sleep 0.05; done
m=$W/mnt-nbdfuse
mkdir -p "$m"
drop
t0=$(now)
nbdfuse -r "$m" "nbd+unix:///bench@s?socket=$W/blockd.sock" &
pids+=($!)
for _ in $(seq 200); do [ -e "$m/nbd" ] && break; sleep 0.02; done
head -c 1 "$m/nbd" >/dev/null
t1=$(now)
first=$(secs "$t0" "$t1")
mounts+=("$m")
cpu_pids="${pids[*]}"
measure_kernel_ext4 "nbdfuse+blockd" "$m/nbd"
fusermount3 -u "$m"
fi

# ---- Backups: vbk, restic, borg ------------------------------------------------------

v backup init "$repo" >/dev/null
t0=$(now); v backup run bench --repo "$repo" >/dev/null; t1=$(now)
echo "# vbk backup run: $(secs "$t0" "$t1") s, repository $(repo_size "${repo#local:}") bytes" >&2
if [ -n "$VBK_BIN_BASE" ]; then
  case $kind in
    local) repo_base=local:$W/repo-base ;;
    rados) repo_base="rados:${VBK_TEST_POOL:-vbk}/bench-repo-base-$$?conf=$CEPH_CONF" ;;
  esac
  "$VBK_BIN_BASE/vbk" --store "$store" backup init "$repo_base" >/dev/null
  t0=$(now)
  "$VBK_BIN_BASE/vbk" --store "$store" backup run bench --repo "$repo_base" >/dev/null
  t1=$(now)
  echo "# vbk backup run (base): $(secs "$t0" "$t1") s, repository $(repo_size "${repo_base#local:}") bytes" >&2
fi
for _ in $(seq "$reps"); do
  repo_arg=$repo
  run_vbk backups/bench/latest backup
  if [ -n "$VBK_BIN_BASE" ]; then
    repo_arg=$repo_base
    run_vbk backups/bench/latest "backup, base" "$VBK_BIN_BASE"
  fi
  repo_arg=$repo
  if [ -n "$ra_kb" ]; then
    run_vbk backups/bench/latest "backup, ra ${ra_kb}K" "$VBK_BIN" "$ra_kb"
  fi
  if [ -n "$VBK_BIN_BASE" ] && [ -n "$ra_kb" ]; then
    repo_arg=$repo_base
    run_vbk backups/bench/latest "backup, base, ra ${ra_kb}K" "$VBK_BIN_BASE" "$ra_kb"
  fi
done

[ "$only" = vbk ] && exit 0

export RESTIC_PASSWORD=bench
restic -q -r "$W/restic" init >/dev/null
t0=$(now)
restic -q -r "$W/restic" backup --stdin --stdin-filename disk.raw <"$W/disk.raw" >/dev/null
t1=$(now)
echo "# restic backup: $(secs "$t0" "$t1") s, repository $(repo_size "$W/restic") bytes" >&2
m=$W/mnt-restic
mkdir -p "$m"
drop
t0=$(now)
restic -q -r "$W/restic" mount "$m" >/dev/null 2>&1 &
pids+=($!)
mounts+=("$m")
for _ in $(seq 600); do [ -e "$m/snapshots/latest/disk.raw" ] && break; sleep 0.05; done
head -c 1 "$m/snapshots/latest/disk.raw" >/dev/null
t1=$(now)
first=$(secs "$t0" "$t1")
cpu_pids=$(mount_pid "$m")
measure_kernel_ext4 "restic mount" "$m/snapshots/latest/disk.raw"
fusermount3 -u "$m"

if /usr/bin/python3 -c 'import llfuse' 2>/dev/null; then
  export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
  borg init -e none "$W/borg" >/dev/null
  t0=$(now)
  (cd "$W" && borg create --read-special --chunker-params fixed,4194304 -C lz4 \
     "$W/borg::b" disk.raw >/dev/null)
  t1=$(now)
  echo "# borg create: $(secs "$t0" "$t1") s, repository $(repo_size "$W/borg") bytes" >&2
  m=$W/mnt-borg
  mkdir -p "$m"
  t0=$(now)
  borg mount "$W/borg::b" "$m"
  mounts+=("$m")
  head -c 1 "$m/disk.raw" >/dev/null
  t1=$(now)
  first=$(secs "$t0" "$t1")
  cpu_pids=$(mount_pid "$m")
  measure_kernel_ext4 "borg mount" "$m/disk.raw"
  fusermount3 -u "$m"
else
  echo "# borg mount skipped: python3-llfuse is not installed" >&2
fi
