#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-bench.sh [SIZE] - vbk-blockd on a local store against qemu-nbd on
# a raw file and nbdkit's file plugin, same machine, same run, Unix
# sockets, fio's nbd engine (libnbd).  Each workload runs on the three
# servers back to back (interleaved), REPEAT times (default 1), and the
# table shows the median with the ratios vbk/qemu-nbd and vbk/nbdkit,
# and vbk-blockd's CPU time per 4 KiB request or per MB in microseconds
# (vbk-cpu: all its threads, from /proc around each run; a number the
# load of a shared machine moves much less than throughput), and the
# same for nbdkit (nbdkit-cpu).
# Not a test: numbers depend on the machine.  Env: VBK_BIN (build/bin),
# BENCH_DIR (a scratch directory, default a new one under /tmp),
# RUNTIME (seconds per run, default 4), REPEAT, BLOCKD_NOFILE (vbk-blockd's
# open-file limit, default 65536 as in deploy/vbk-blockd.service; empty:
# the shell's), ONLY_TLS=1 (the TLS rows alone), ROWS (an extended regular
# expression: only the rows whose name matches, e.g. ROWS=firstwrite), SIZES (one table per SIZE:MODE, default "SIZE:MODE" from the
# argument (1G) and MODE (full); e.g. SIZES="2G:full 16G:full 64G:thin").
# MODE full: the image and the peers' raw file (one file shared by both
# peers, which run in turn) hold the same data, written fast (a random
# 1 MiB block stamped with offsets); thin: a new image and a sparse file,
# plus the first-write rows: random 4 KiB writes to a new thin disk
# (a new image and a new sparse file for every run).  Scratch space: the
# size of a full disk twice (raw file and store); everything goes at the
# end.
#
# The page cache: at 16G a full disk's data is 32 GiB (the store and
# the peers' raw file), more than this machine's memory, so whichever
# server ran last would find its data cached and the next one would pay
# the misses.  CACHE says what each run of a full table starts from, the
# same for every server (printed in the table's header): warm (the
# default) drops the other servers' data from the page cache (their files
# synced, then POSIX_FADV_DONTNEED) and reads this server's data into it
# before every run; cold drops this server's data too (every read goes to
# the disk at first); asis does neither (what earlier versions measured).
# Thin tables are always asis (their data is what the rows wrote).  The
# share of each server's data resident when its runs started (fincore,
# median over the repeats) follows each table, and the header gives
# vbk-blockd's open-file limit as it got it (the local store keeps half
# of it as open object files).  VBK_BIN_BASE also adds that build's
# vbk-blockd to the size tables, serving the same store in turn (each
# vbk-blockd runs only for its own runs: two never hold the image at
# once), and a table per size compares the builds: throughput and
# vbk-blockd's CPU per request.
#
# Then TLS rows (TLS=0 skips them): vbk-blockd and qemu-nbd on TCP
# loopback with NBD over TLS, the same X.509 certificates
# (deploy/make-tls-certs.sh; qemu-nbd --object tls-creds-x509,...,
# endpoint=server --tls-creds), fio connecting with nbds:// (libnbd finds
# the client certificate in $HOME/.pki/libnbd, which it reads only for a
# user other than root: as root fio runs as nobody), plus vbk-blockd on
# plain TCP loopback, and qemu-nbd on plain TCP too, for the cost of TLS
# itself on each (goal: tls/tcp-vbk >= tls/tcp-qemu).  A second table
# shows each server's CPU time per request (per MB for 1M rows) and the
# cost of TLS in those terms (tls/tcp: lower is cheaper).  Both TLS
# servers get the same GnuTLS priority string, TLS_PRIORITY (default:
# vbk-blockd's own default, see docs/TLS.md), so that both negotiate the
# same suite (the log lines after the tables show which); without it
# qemu-nbd would follow its client's order (AES-256-GCM first) while
# vbk-blockd picks AES-128-GCM.  VBK_BIN_BASE
# (another build's bin directory, e.g. of the commit before a change)
# adds that vbk-blockd on TLS and on TCP to the same runs, interleaved,
# and a third table compares the two builds; it also runs the first-write
# rows, interleaved, on a store of its own (a table after the thin one).
set -euo pipefail

sizes=${SIZES:-${1:-1G}:${MODE:-full}}
size=${sizes%% *}; size=${size%%:*}   # the TLS rows' image
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${VBK_BIN:-$here/build/bin}
runtime=${RUNTIME:-4}
repeat=${REPEAT:-1}
dir=${BENCH_DIR:-$(mktemp -d /tmp/vbk-bench.XXXXXX)}
pids=()
cleanup () {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

tls_rows=${TLS:-1}
for t in fio qemu-nbd nbdkit nbdcopy certtool; do
  command -v $t >/dev/null || { echo "blockd-bench: $t is missing" >&2; exit 1; }
done

# vbk-blockd runs with the open-file limit of deploy/vbk-blockd.service
# (LimitNOFILE=65536) where this shell may raise it (BLOCKD_NOFILE=
# keeps the shell's): the local store sizes its fd cache from that limit,
# and a 64G disk of 4 MiB objects has 16384 of them.
blockd_limit=()
nofile=${BLOCKD_NOFILE-65536}
if [ -n "$nofile" ] && prlimit --nofile="$nofile:$nofile" true 2>/dev/null; then
  blockd_limit=(prlimit --nofile="$nofile:$nofile" --)
fi

wait_sock () { for _ in $(seq 600); do [ -S "$1" ] && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }

# fill_raw FILE SIZE: SIZE bytes of incompressible, never repeating data,
# fast: one random 1 MiB block, each 4 KiB of it stamped with its offset.
fill_raw () {
  python3 - "$1" "$2" <<'PY'
import os, struct, sys
path, size = sys.argv[1], int(sys.argv[2])
base = bytearray(os.urandom(1 << 20))
with open(path, "wb") as f:
    for mib in range((size + (1 << 20) - 1) >> 20):
        for k in range(256):
            struct.pack_into("<Q", base, k << 12, (mib << 20) + (k << 12))
        f.write(base[:min(1 << 20, size - (mib << 20))])
PY
}

bytes_of () { numfmt --from=iec "$1"; }

# name rw bs iodepth unit
workloads=(
  "4K-randread-QD1 randread 4k 1 kIOPS"
  "4K-randread-QD32 randread 4k 32 kIOPS"
  "4K-randwrite-QD1 randwrite 4k 1 kIOPS"
  "4K-randwrite-QD16 randwrite 4k 16 kIOPS"
  "4K-randwrite-QD32 randwrite 4k 32 kIOPS"
  "1M-seqread-QD8 read 1M 8 MB/s"
  "1M-seqwrite-QD8 write 1M 8 MB/s"
)

# cpu_ticks PID: the server's CPU time so far (clock ticks, all threads)
cpu_ticks () { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run SERVER RW BS QD: prints kIOPS or MB/s.  With cpu_pid set (the
# vbk-blockd serving SERVER), also writes that process's CPU time per
# 4 KiB request or per MB, in microseconds, to $dir/cpu.last (from
# /proc/PID/stat around the run; the ramp counts at the measured rate).
run () {
  local out="$dir/fio.json" dirn t0=0 t1=0
  [ -z "${cpu_pid:-}" ] || t0=$(cpu_ticks "$cpu_pid")
  fio --name=bench --ioengine=nbd --uri="${uri[$1]}" --rw="$2" --bs="$3" \
      --iodepth="$4" --time_based --runtime="$runtime" --ramp_time=1 \
      --output-format=json --output="$out" >/dev/null 2>&1
  [ -z "${cpu_pid:-}" ] || t1=$(cpu_ticks "$cpu_pid")
  case "$2" in *read) dirn=read ;; *) dirn=write ;; esac
  python3 - "$out" "$dirn" "$3" "$((t1 - t0))" "$(getconf CLK_TCK)" \
    "$((runtime + 1))" "${cpu_pid:+$dir/cpu.last}" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0][sys.argv[2]]
cpu_us = int(sys.argv[4]) * 1e6 / int(sys.argv[5])
secs = int(sys.argv[6])
if sys.argv[3] == "4k":
    print("%.1f" % (j["iops"] / 1000))
    per = cpu_us / max(j["iops"] * secs, 1)
else:
    print("%.0f" % (j["bw_bytes"] / 1e6))
    per = cpu_us / max(j["bw_bytes"] / 1e6 * secs, 1)
if sys.argv[7]:
    open(sys.argv[7], "w").write("%.1f\n" % per)
PY
}

median () { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio () { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b>0?a/b:0)}'; }
row () {
  printf '%-20s %-6s %9s %9s %9s %10s %10s %9s %10s\n' "$1" "$2" "$3" "$4" "$5" \
    "$(ratio "$3" "$4")" "$(ratio "$3" "$5")" "$6" "${7:-}"
}

declare -A uri
store="local:$dir/store"
bstore="local:$dir/store-base"

# fill_run SERVER QD: random 4 KiB writes to a new thin disk of $size
# (a new image, a new sparse file: every run starts empty), as run.
# SERVER base: VBK_BIN_BASE's vbk-blockd, on a store of its own (a base
# build may not read the layout of this build's stores).  The filled
# images are removed only after the first-write rows (fill_rm): on ext4
# without a journal (the root file system of some VMs) a new inode skips
# every inode freed in the last 5 minutes (300 more while its inode
# table block is dirty) and checks each one on the way (find_inode_bit,
# recently_deleted), so removing the last run's ~15,000 object files
# right before the next run made each create of that run walk past all
# of them: a cost of the benchmark's own clean-up, not of filling a disk.
# (fill_run runs in a subshell: the list is a file.)
fill_rm () {
  local f
  [ -f "$dir/fill.list" ] || return 0
  while read -r f; do
    case "$f" in
      vbk:*) "$bin/vbk" --store "$store" image rm "${f#vbk:}" >/dev/null 2>&1 || true ;;
      base:*) "$VBK_BIN_BASE/vbk" --store "$bstore" image rm "${f#base:}" >/dev/null 2>&1 || true ;;
    esac
  done <"$dir/fill.list"
  rm -f "$dir/fill.list"
}
fill_run () {
  local n p
  n=$(date +%s%N)
  case "$1" in
    vbk)
      "$bin/vbk" --store "$store" image create "fill$n" --size "$size" >/dev/null
      uri[fill]="nbd+unix:///fill$n?socket=$dir/vbk.sock" ;;
    base)
      "$VBK_BIN_BASE/vbk" --store "$bstore" image create "fill$n" --size "$size" >/dev/null
      uri[fill]="nbd+unix:///fill$n?socket=$dir/base.sock" ;;
    qemu)
      truncate -s "$size" "$dir/fill.raw"
      qemu-nbd -f raw -t -e 4 --cache=writeback -k "$dir/fill.sock" \
        "$dir/fill.raw" >/dev/null 2>&1 &
      p=$! ;;
    nbdkit)
      truncate -s "$size" "$dir/fill.raw"
      nbdkit -f -U "$dir/fill.sock" file "$dir/fill.raw" >/dev/null 2>&1 &
      p=$! ;;
  esac
  if [ "$1" = qemu ] || [ "$1" = nbdkit ]; then
    wait_sock "$dir/fill.sock"
    uri[fill]="nbd+unix:///?socket=$dir/fill.sock"
  fi
  run fill randwrite 4k "$2"
  if [ "$1" = vbk ] || [ "$1" = base ]; then
    echo "$1:fill$n" >>"$dir/fill.list"
  else
    kill "$p"; wait "$p" 2>/dev/null || true
    rm -f "$dir/fill.raw" "$dir/fill.sock"
  fi
}

# cache_ctl drop|warm|res PATH...: drop (sync, then POSIX_FADV_DONTNEED)
# or read into the page cache every file under PATHs (files or
# directories, not recursive); res prints the resident share of their
# allocated bytes in percent (fincore; mincore()).
cache_ctl () {
  python3 - "$@" <<'PY'
import os, subprocess, sys
mode, paths = sys.argv[1], sys.argv[2:]
files = []
for p in paths:
    if os.path.isdir(p):
        files += [e.path for e in os.scandir(p) if e.is_file()]
    elif os.path.exists(p):
        files.append(p)
if mode == "drop":
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
elif mode == "warm":
    buf = bytearray(1 << 20)
    for f in files:
        with open(f, "rb", buffering=0) as h:
            while h.readinto(buf):
                pass
else:
    alloc = sum(os.stat(f).st_blocks * 512 for f in files)
    res = 0
    for i in range(0, len(files), 512):
        out = subprocess.run(["fincore", "-b", "-n", "-r", "-o", "RES"]
                             + files[i:i + 512], capture_output=True,
                             text=True).stdout
        res += sum(int(x) for x in out.split())
    print("%.0f" % (100.0 * res / alloc if alloc else 0))
PY
}

# data_of SERVER: the files holding SERVER's data.
data_of () {
  case "$1" in
    vbk|base) echo "$dir/store/obj" ;;
    *) echo "$dir/peer.raw" ;;
  esac
}

# prepare SERVER: the page cache as CACHE says, before a run of SERVER
# (full tables); sets res (percent of SERVER's data resident).
prepare () {
  local s mine
  mine=$(data_of "$1")
  if [ "$cachemode" != asis ]; then
    for s in "$dir/store/obj" "$dir/peer.raw"; do
      [ "$s" = "$mine" ] && [ "$cachemode" = warm ] && continue
      cache_ctl drop "$s"
    done
    [ "$cachemode" = warm ] && cache_ctl warm "$mine"
  fi
  res=$(cache_ctl res "$mine")
}

# blockd_start BIN: starts that vbk-blockd on the store at $dir/vbk.sock,
# its pid in vp; blockd_stop stops it (a clean stop: it flushes).
blockd_start () {
  "${blockd_limit[@]}" "$1/vbk-blockd" --store "$store" \
    --socket "$dir/vbk.sock" 2>>"$dir/vbk.log" &
  vp=$!
  pids+=("$vp")
  wait_sock "$dir/vbk.sock"
}
blockd_stop () {
  kill "$vp"; wait "$vp" 2>/dev/null || true
  rm -f "$dir/vbk.sock"
  vp=
}

# bench_size SIZE MODE: one table.  MODE full: the image and the peers'
# raw file hold the same SIZE bytes of data; thin: nothing written (a new
# image, a sparse file), plus the first-write rows (fill_run).
bench_size () {
  local size=$1 mode=$2 vp qp kp w name rw bs qd unit i v q k res
  local cachemode=${CACHE:-warm} active=vbk sbase=${VBK_BIN_BASE:-}
  local -a rv rq rk cv ck xv xq xk xb sv sc resrows=() cmprows=()
  [ "$mode" = full ] || cachemode=asis
  echo "== $size $mode ==" >&2
  rm -rf "$dir/store" "$dir/peer.raw"
  : >"$dir/vbk.log"
  "$bin/vbk" --store "$store" image create bench --size "$size" >/dev/null
  blockd_start "$bin"
  if [ "$mode" = full ]; then
    echo "preparing $size of data ..." >&2
    fill_raw "$dir/peer.raw" "$(bytes_of "$size")"
    nbdcopy --connections=4 --threads=4 "$dir/peer.raw" \
      "nbd+unix:///bench?socket=$dir/vbk.sock"
  else
    truncate -s "$size" "$dir/peer.raw"
  fi
  # One raw file for both peers: they run in turn, never at once, and
  # what one writes the other reads back as the same kind of data.
  qemu-nbd -f raw -t -e 4 --cache=writeback -k "$dir/qemu.sock" "$dir/peer.raw" &
  qp=$!
  nbdkit -f -U "$dir/nbdkit.sock" file "$dir/peer.raw" &
  kp=$!
  pids+=("$qp" "$kp")
  wait_sock "$dir/qemu.sock"; wait_sock "$dir/nbdkit.sock"
  uri[vbk]="nbd+unix:///bench?socket=$dir/vbk.sock"
  uri[base]=${uri[vbk]}
  uri[qemu]="nbd+unix:///?socket=$dir/qemu.sock"
  uri[nbdkit]="nbd+unix:///?socket=$dir/nbdkit.sock"

  echo "$size $mode ($(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)," \
    "memory $(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB," \
    "data $(du -sh --apparent-size "$dir/store/obj" | cut -f1) store +" \
    "$(du -sh "$dir/peer.raw" | cut -f1) raw)"
  echo "cache: $cachemode; vbk-blockd open-file limit" \
    "$(awk '/open files/ {print $4}' "/proc/$vp/limits")$(
      [ -n "$nofile" ] && [ ${#blockd_limit[@]} = 0 ] &&
        echo " ($nofile refused here)")"
  printf '%-20s %-6s %9s %9s %9s %10s %10s %9s %10s\n' workload unit vbk qemu-nbd nbdkit vbk/qemu vbk/nbdkit vbk-cpu nbdkit-cpu
  for w in "${workloads[@]}"; do
    read -r name rw bs qd unit <<<"$w"
    [[ $name =~ ${ROWS:-.} ]] || continue
    rv=() rq=() rk=() cv=() ck=() xv=() xq=() xk=() xb=() sv=() sc=()
    for ((i = 0; i < repeat; i++)); do
      if [ -n "$sbase" ] && [ "$active" != vbk ]; then
        blockd_stop; blockd_start "$bin"; active=vbk
      fi
      prepare vbk; xv+=("$res")
      rv+=("$(cpu_pid=$vp run vbk "$rw" "$bs" "$qd")")
      cv+=("$(cat "$dir/cpu.last")")
      if [ -n "$sbase" ]; then
        blockd_stop; blockd_start "$sbase"; active=base
        prepare base; xb+=("$res")
        sv+=("$(cpu_pid=$vp run base "$rw" "$bs" "$qd")")
        sc+=("$(cat "$dir/cpu.last")")
      fi
      prepare qemu; xq+=("$res")
      rq+=("$(run qemu "$rw" "$bs" "$qd")")
      prepare nbdkit; xk+=("$res")
      rk+=("$(cpu_pid=$kp run nbdkit "$rw" "$bs" "$qd")")
      ck+=("$(cat "$dir/cpu.last")")
    done
    row "$name" "$unit" "$(median "${rv[@]}")" "$(median "${rq[@]}")" \
      "$(median "${rk[@]}")" "$(median "${cv[@]}")" "$(median "${ck[@]}")"
    resrows+=("$(printf '%-20s %9s %9s %9s %9s' "$name" "$(median "${xv[@]}")" \
      "$(median "${xq[@]}")" "$(median "${xk[@]}")" \
      "${sbase:+$(median "${xb[@]}")}")")
    if [ -n "$sbase" ]; then
      cmprows+=("$(printf '%-20s %9s %9s %9s %9s %9s %11s %s' "$name" \
        "$(median "${rv[@]}")" "$(median "${sv[@]}")" \
        "$(ratio "$(median "${rv[@]}")" "$(median "${sv[@]}")")" \
        "$(median "${cv[@]}")" "$(median "${sc[@]}")" \
        "$(ratio "$(median "${sv[@]}")" "$(median "${rk[@]}")")" \
        "$(echo "${rv[*]}" | tr ' ' /):$(echo "${sv[*]}" | tr ' ' /)")")
    fi
  done
  if [ "$active" != vbk ]; then
    blockd_stop; blockd_start "$bin"; active=vbk
  fi
  echo
  echo "page cache before each run: % of the server's data resident (median)"
  printf '%-20s %9s %9s %9s %9s\n' workload vbk qemu-nbd nbdkit "${sbase:+base}"
  printf '%s\n' "${resrows[@]}"
  if [ -n "$sbase" ]; then
    echo
    echo "this build (vbk) against VBK_BIN_BASE (base), same store, same runs,"
    echo "interleaved: throughput, vbk-blockd CPU per request (us) or MB, each run"
    printf '%-20s %9s %9s %9s %9s %9s %11s %s\n' workload vbk base vbk/base \
      cpu-vbk cpu-base base/nbdkit "runs (vbk:base)"
    printf '%s\n' "${cmprows[@]}"
  fi
  if [ "$mode" = thin ]; then
    local -a baserows=() rb=() cb=()
    local bp=
    if [ -n "${VBK_BIN_BASE:-}" ]; then
      rm -rf "$dir/store-base"
      "${blockd_limit[@]}" "$VBK_BIN_BASE/vbk-blockd" --store "$bstore" \
        --socket "$dir/base.sock" 2>"$dir/base.log" &
      bp=$!
      pids+=("$bp")
      wait_sock "$dir/base.sock"
    fi
    for qd in 1 32; do
      [[ 4K-firstwrite-QD$qd =~ ${ROWS:-.} ]] || continue
      rv=() rq=() rk=() cv=() rb=() cb=()
      for ((i = 0; i < repeat; i++)); do
        rv+=("$(cpu_pid=$vp fill_run vbk "$qd")")
        cv+=("$(cat "$dir/cpu.last")")
        if [ -n "$bp" ]; then
          rb+=("$(cpu_pid=$bp fill_run base "$qd")")
          cb+=("$(cat "$dir/cpu.last")")
        fi
        rq+=("$(fill_run qemu "$qd")")
        rk+=("$(fill_run nbdkit "$qd")")
      done
      row "4K-firstwrite-QD$qd" kIOPS "$(median "${rv[@]}")" \
        "$(median "${rq[@]}")" "$(median "${rk[@]}")" "$(median "${cv[@]}")"
      if [ -n "$bp" ]; then
        baserows+=("$(printf '%-20s %9s %9s %9s %9s %9s %10s %10s' \
          "4K-firstwrite-QD$qd" "$(median "${rv[@]}")" "$(median "${rb[@]}")" \
          "$(ratio "$(median "${rv[@]}")" "$(median "${rb[@]}")")" \
          "$(median "${cv[@]}")" "$(median "${cb[@]}")" \
          "$(ratio "$(median "${rb[@]}")" "$(median "${rk[@]}")")" \
          "$(echo "${rv[*]}" | tr ' ' /):$(echo "${rb[*]}" | tr ' ' /)")")
      fi
    done
    fill_rm
    if [ -n "$bp" ]; then
      echo
      echo "this build (vbk) against VBK_BIN_BASE (base), same runs, interleaved:"
      echo "kIOPS, vbk-blockd CPU per request (us), base/nbdkit, each run (vbk:base)"
      printf '%-20s %9s %9s %9s %9s %9s %10s %10s\n' workload vbk base vbk/base \
        cpu-vbk cpu-base base/nbdkit runs
      printf '%s\n' "${baserows[@]}"
      kill "$bp"; wait "$bp" 2>/dev/null || true
      rm -f "$dir/base.sock"
    fi
  fi
  echo
  kill "$vp" "$qp" "$kp"
  wait "$vp" "$qp" "$kp" 2>/dev/null || true
  rm -f "$dir/vbk.sock" "$dir/qemu.sock" "$dir/nbdkit.sock"
}

# ONLY_TLS=1: the TLS rows alone (on a SIZE image, full).
if [ "${ONLY_TLS:-0}" != 1 ]; then
  for sm in $sizes; do
    bench_size "${sm%%:*}" "${sm#*:}"
  done
fi

[ "$tls_rows" = 1 ] || exit 0

# ---- TLS over TCP loopback -------------------------------------------------
# On a fully written image of the first size.
rm -rf "$dir/store" "$dir/peer.raw"
"$bin/vbk" --store "$store" image create bench --size "$size" >/dev/null
fill_raw "$dir/peer.raw" "$(bytes_of "$size")"
"$here/deploy/make-tls-certs.sh" "$dir/certs" bench 2>/dev/null
mkdir -p "$dir/home/.pki" "$dir/tlsrun"
cp -r "$dir/certs/client-bench" "$dir/home/.pki/libnbd"
# A throwaway client key, readable by the user fio runs as.
chmod 755 "$dir" "$dir/home" "$dir/home/.pki" "$dir/home/.pki/libnbd"
chmod 644 "$dir/home/.pki/libnbd/"*
chmod 777 "$dir/tlsrun"
as_user=()
[ "$(id -u)" = 0 ] && as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
printf '[blockd]\ndefault_allow = *\n' >"$dir/tls.conf"
# The same priority string for both TLS servers: vbk-blockd's default
# (NBD_SRV_TLS_PRIORITY, read from blockd/tls.h) unless TLS_PRIORITY
# says otherwise.  (qemu-nbd's object syntax: no commas in it.)
prio=${TLS_PRIORITY:-$(python3 - "$here/blockd/tls.h" <<'PY'
import re, sys
m = re.search(r'#define NBD_SRV_TLS_PRIORITY((?:\s*\\?\s*"[^"]*")+)', open(sys.argv[1]).read())
print("".join(re.findall(r'"([^"]*)"', m.group(1))) if m else "")
PY
)}
[ -n "$prio" ] || { echo "blockd-bench: no NBD_SRV_TLS_PRIORITY in blockd/tls.h" >&2; exit 1; }
free_port () { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pv=$(free_port); pq=$(free_port); pp=$(free_port); pqt=$(free_port)
"${blockd_limit[@]}" "$bin/vbk-blockd" --store "$store" --socket "$dir/vbk-tls.sock" \
  --listen "127.0.0.1:$pv" --tls-certificates "$dir/certs/server" \
  --tls-priority "$prio" --config "$dir/tls.conf" 2>"$dir/vbk-tls.log" &
pids+=($!); declare -A spid; spid[vbktls]=$!
"${blockd_limit[@]}" "$bin/vbk-blockd" --store "$store" --socket "$dir/vbk-tcp.sock" \
  --listen "127.0.0.1:$pp" 2>"$dir/vbk-tcp.log" &
pids+=($!); spid[vbktcp]=$!
base=${VBK_BIN_BASE:-}
if [ -n "$base" ]; then
  pb=$(free_port); pbt=$(free_port)
  "$base/vbk-blockd" --store "$store" --socket "$dir/base-tls.sock" \
    --listen "127.0.0.1:$pb" --tls-certificates "$dir/certs/server" \
    --tls-priority "$prio" --config "$dir/tls.conf" 2>"$dir/base-tls.log" &
  pids+=($!); spid[basetls]=$!
  "$base/vbk-blockd" --store "$store" --socket "$dir/base-tcp.sock" \
    --listen "127.0.0.1:$pbt" 2>"$dir/base-tcp.log" &
  pids+=($!); spid[basetcp]=$!
  wait_sock "$dir/base-tls.sock"; wait_sock "$dir/base-tcp.sock"
  uri[basetls]="nbds://127.0.0.1:$pb/bench"
  uri[basetcp]="nbd://127.0.0.1:$pbt/bench"
fi
# Two qemu-nbd on one file (TLS and plain TCP, used in turn): without
# qemu's image locking, which would refuse the second.
qimg="driver=raw,file.driver=file,file.filename=$dir/peer.raw,file.locking=off"
qemu-nbd -t -e 4 --cache=writeback -b 127.0.0.1 -p "$pq" -x bench \
  --object "tls-creds-x509,id=tls0,dir=$dir/certs/server,endpoint=server,priority=$prio" \
  --tls-creds tls0 --image-opts "$qimg" 2>"$dir/qemu-tls.log" &
pids+=($!); spid[qemutls]=$!
qemu-nbd -t -e 4 --cache=writeback -b 127.0.0.1 -p "$pqt" -x bench \
  --image-opts "$qimg" &
pids+=($!); spid[qemutcp]=$!
wait_sock "$dir/vbk-tls.sock"; wait_sock "$dir/vbk-tcp.sock"
nbdcopy --connections=4 --threads=4 "$dir/peer.raw" \
  "nbd+unix:///bench?socket=$dir/vbk-tcp.sock"
tls_client () { "${as_user[@]}" env HOME="$dir/home" "$@"; }
for _ in $(seq 100); do
  tls_client nbdinfo "nbds://127.0.0.1:$pq/bench" >/dev/null 2>&1 && break
  sleep 0.1
done
tls_client nbdinfo "nbds://127.0.0.1:$pv/bench" >/dev/null ||
  { echo "blockd-bench: vbk over TLS does not answer" >&2; exit 1; }
uri[vbktls]="nbds://127.0.0.1:$pv/bench"
uri[qemutls]="nbds://127.0.0.1:$pq/bench"
uri[vbktcp]="nbd://127.0.0.1:$pp/bench"
uri[qemutcp]="nbd://127.0.0.1:$pqt/bench"

# run_tls SERVER RW BS QD: as run, as the TLS client user, plus the
# server's CPU time per 4 KiB request or per MB, in microseconds (from
# /proc/PID/stat around the run; the ramp counts at the measured rate):
# a number the load of a shared machine moves much less than throughput.
run_tls () {
  local out="$dir/tlsrun/fio.json" dirn t0 t1
  rm -f "$out"
  t0=$(cpu_ticks "${spid[$1]}")
  tls_client fio --name=bench --ioengine=nbd --uri="${uri[$1]}" --rw="$2" \
      --bs="$3" --iodepth="$4" --time_based --runtime="$runtime" \
      --ramp_time=1 --output-format=json --output="$out" >/dev/null 2>&1
  t1=$(cpu_ticks "${spid[$1]}")
  case "$2" in *read) dirn=read ;; *) dirn=write ;; esac
  python3 - "$out" "$dirn" "$3" "$((t1 - t0))" "$(getconf CLK_TCK)" \
    "$((runtime + 1))" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0][sys.argv[2]]
cpu_us = int(sys.argv[4]) * 1e6 / int(sys.argv[5])
secs = int(sys.argv[6])
if sys.argv[3] == "4k":
    print("%.1f %.1f" % (j["iops"] / 1000, cpu_us / max(j["iops"] * secs, 1)))
else:
    print("%.0f %.0f" % (j["bw_bytes"] / 1e6,
                         cpu_us / max(j["bw_bytes"] / 1e6 * secs, 1)))
PY
}

echo
echo "throughput (medians; kIOPS or MB/s)"
printf '%-20s %-6s %9s %9s %9s %9s %12s %12s %12s\n' workload unit vbk-tls \
  qemu-tls vbk-tcp qemu-tcp vbk/qemu-tls tls/tcp-vbk tls/tcp-qemu
cpurows=(); baserows=()
for w in "4K-randread-QD16 randread 4k 16 kIOPS" \
         "4K-randwrite-QD16 randwrite 4k 16 kIOPS" \
         "1M-seqread-QD8 read 1M 8 MB/s" \
         "1M-seqwrite-QD8 write 1M 8 MB/s"; do
  read -r name rw bs qd unit <<<"$w"
  declare -a rv=() rq=() rp=() rqp=() cv=() cq=() cp=() cqp=()
  declare -a rb=() rbp=() cb=() cbp=()
  for ((i = 0; i < repeat; i++)); do
    read -r a b <<<"$(run_tls vbktls "$rw" "$bs" "$qd")"; rv+=("$a"); cv+=("$b")
    if [ -n "$base" ]; then
      read -r a b <<<"$(run_tls basetls "$rw" "$bs" "$qd")"; rb+=("$a"); cb+=("$b")
    fi
    read -r a b <<<"$(run_tls qemutls "$rw" "$bs" "$qd")"; rq+=("$a"); cq+=("$b")
    read -r a b <<<"$(run_tls vbktcp "$rw" "$bs" "$qd")"; rp+=("$a"); cp+=("$b")
    if [ -n "$base" ]; then
      read -r a b <<<"$(run_tls basetcp "$rw" "$bs" "$qd")"; rbp+=("$a"); cbp+=("$b")
    fi
    read -r a b <<<"$(run_tls qemutcp "$rw" "$bs" "$qd")"; rqp+=("$a"); cqp+=("$b")
  done
  v=$(median "${rv[@]}"); q=$(median "${rq[@]}"); t=$(median "${rp[@]}")
  qt=$(median "${rqp[@]}")
  printf '%-20s %-6s %9s %9s %9s %9s %12s %12s %12s\n' "$name" "$unit" "$v" \
    "$q" "$t" "$qt" "$(ratio "$v" "$q")" "$(ratio "$v" "$t")" \
    "$(ratio "$q" "$qt")"
  v=$(median "${cv[@]}"); q=$(median "${cq[@]}"); t=$(median "${cp[@]}")
  qt=$(median "${cqp[@]}")
  [ "$bs" = 4k ] && cu=us/op || cu=us/MB
  cpurows+=("$(printf '%-20s %-6s %9s %9s %9s %9s %12s %12s' "$name" "$cu" \
    "$v" "$q" "$t" "$qt" "$(ratio "$v" "$t")" "$(ratio "$q" "$qt")")")
  if [ -n "$base" ]; then
    tv=$(median "${rv[@]}"); tp=$(median "${rp[@]}")
    tb=$(median "${rb[@]}"); tbp=$(median "${rbp[@]}")
    b=$(median "${cb[@]}"); bt=$(median "${cbp[@]}")
    baserows+=("$(printf '%-20s %9s %9s %9s %9s %12s %12s %9s %9s %12s %12s' \
      "$name" "$tv" "$tb" "$tp" "$tbp" "$(ratio "$tv" "$tp")" \
      "$(ratio "$tb" "$tbp")" "$v" "$b" "$(ratio "$v" "$t")" \
      "$(ratio "$b" "$bt")")")
  fi
done
echo
echo "server CPU per request or MB (medians; lower is better; TLS's cost: tls/tcp)"
printf '%-20s %-6s %9s %9s %9s %9s %12s %12s\n' workload unit vbk-tls \
  qemu-tls vbk-tcp qemu-tcp tls/tcp-vbk tls/tcp-qemu
printf '%s\n' "${cpurows[@]}"
echo
echo "TLS priority (both servers): $prio"
echo "vbk-blockd's sessions: $(sed -n 's/.*: TLS (\([^)]*\)).*/\1/p' "$dir/vbk-tls.log" | sort | uniq -c | tr -s ' \n' ' ')"
if [ -n "$base" ]; then
  echo
  echo "this build (vbk) against VBK_BIN_BASE (base), same runs: throughput, TLS's"
  echo "share of TCP's (higher is better), server CPU on TLS (us/op or us/MB)"
  printf '%-20s %9s %9s %9s %9s %12s %12s %9s %9s %12s %12s\n' workload \
    vbk-tls base-tls vbk-tcp base-tcp tls/tcp-vbk tls/tcp-base cpu-vbk \
    cpu-base cpu-tls/tcp-v cpu-tls/tcp-b
  printf '%s\n' "${baserows[@]}"
fi
