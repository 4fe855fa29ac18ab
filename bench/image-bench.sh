#!/bin/bash
# SPDX-License-Identifier: MIT
#
# image-bench.sh - the image layer on each backend, against `rbd bench`.
#
# Writes and reads a 1 GiB image through the image API (bench/image-bench)
# on the local store and on a Ceph pool, and runs `rbd bench` with the
# same request size, pattern and queue depth (--io-threads 16) on the
# same pool in the same run, interleaved case by case so that both see
# the same cluster state.  Prints a table with MiB/s, IOPS and the ratio
# vbk-on-rados / rbd.
#
# The first case, 4M sequential writes, covers the whole 1 GiB on every
# backend, so the reads after it hit written data everywhere (librbd's
# object map, like vbk's, would otherwise answer reads of unwritten
# objects without asking the OSDs).  The 4M cases move 1 GiB (256 MiB of
# 4M reads take well under a second here: too short to measure), the 4K
# cases 256 MiB, as `rbd bench --io-total 256M`.
#
# Environment:
#   CEPH_CONF       use this cluster; otherwise one is started with
#                   deploy/ceph-dev-cluster.sh in a temporary folder and
#                   stopped at the end
#   VBK_BENCH_POOL  pool (default vbk)
#   VBK_BIN         where image-bench is (default build/bin of the tree)
#   BACKENDS        subset of "local rados" (default both)
#   TOTAL_4M, TOTAL_4K  bytes moved by the 4M and by the 4K cases
#                   (default 1G and 256M)
#
# The local store lives in $TMPDIR; its reads are mostly served by the
# page cache, so they show the cost of the image layer, not of a disk.

set -euo pipefail

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
VBK_BIN=${VBK_BIN:-$SRC/build/bin}
BENCH=$VBK_BIN/image-bench
POOL=${VBK_BENCH_POOL:-vbk}
BACKENDS=${BACKENDS:-local rados}
TOTAL_4M=${TOTAL_4M:-1G}
TOTAL_4K=${TOTAL_4K:-256M}
SIZE=1G
DEPTH=16
TMP=${TMPDIR:-/tmp}

# "type io-size pattern total"
CASES=(
  "write 4M seq $TOTAL_4M"
  "read 4M seq $TOTAL_4M"
  "write 4K rand $TOTAL_4K"
  "read 4K rand $TOTAL_4K"
)

die ()
{
  echo "image-bench.sh: $*" >&2
  exit 1
}

[ -x "$BENCH" ] || die "no $BENCH (build the image-bench target first)"

has ()
{
  case " $BACKENDS " in *" $1 "*) return 0 ;; esac
  return 1
}

work=$(mktemp -d "$TMP/vbk-image-bench.XXXXXX")
ceph_dir=""
rbd_image=""
conf=${CEPH_CONF:-}
image=bench-$$

cleanup ()
{
  set +e
  if [ -n "$rbd_image" ]; then
    rbd -c "$conf" rm --no-progress "$POOL/$rbd_image" >/dev/null 2>&1
  fi
  if [ -n "$conf" ] && has rados; then
    "$BENCH" --store "rados:$POOL?conf=$conf" --image "$image" \
      --remove-only >/dev/null 2>&1
  fi
  if [ -n "$ceph_dir" ]; then
    "$SRC/deploy/ceph-dev-cluster.sh" stop "$ceph_dir" >/dev/null
  fi
  rm -rf -- "$work"
}
trap cleanup EXIT

if has rados; then
  if [ -z "$conf" ]; then
    echo "starting a Ceph cluster in $work/ceph ..." >&2
    ceph_dir=$work/ceph
    conf=$("$SRC/deploy/ceph-dev-cluster.sh" start "$ceph_dir" | tail -n1)
  fi
  [ -r "$conf" ] || die "cannot read ceph.conf $conf"
  rbd_image=rbd-bench-$$
  rbd -c "$conf" create --size "$SIZE" "$POOL/$rbd_image"
fi

bytes_of ()
{
  local n=${1%[KMGkmg]}
  case $1 in
    *[Kk]) echo $((n << 10)) ;;
    *[Mm]) echo $((n << 20)) ;;
    *[Gg]) echo $((n << 30)) ;;
    *) echo "$1" ;;
  esac
}

# Runs image-bench; prints "MiB/s IOPS".
run_vbk ()
{
  local uri=$1 type=$2 bs=$3 pat=$4 total=$5 out
  out=$("$BENCH" --store "$uri" --image "$image" --size "$SIZE" \
          --type "$type" --io-size "$bs" --pattern "$pat" --depth "$DEPTH" \
          --total "$total") || die "image-bench failed on $uri"
  echo "$out" >&2
  # vbk write 4M seq: 123.4 MiB/s 30.8 IOPS
  awk '{ print $(NF-3), $(NF-1) }' <<<"$out"
}

# Runs rbd bench; prints "MiB/s IOPS".
run_rbd ()
{
  local type=$1 bs=$2 pat=$3 total=$4 out
  out=$(rbd -c "$conf" bench --io-type "$type" --io-size "$bs" \
          --io-pattern "$pat" --io-threads "$DEPTH" --io-total "$total" \
          "$POOL/$rbd_image" 2>&1) || die "rbd bench failed: $out"
  # elapsed: 5   ops: 16384   ops/sec: 3022.88   bytes/sec: 12 MiB/s
  out=$(grep '^elapsed:' <<<"$out" | tail -n1)
  [ -n "$out" ] || die "no summary from rbd bench"
  echo "rbd $type $bs $pat: $out" >&2
  awk -v bs="$(bytes_of "$bs")" \
    '{ printf "%.1f %.1f\n", $6 * bs / 1048576, $6 }' <<<"$out"
}

declare -A res
for c in "${CASES[@]}"; do
  read -r type bs pat total <<<"$c"
  if has local; then
    res[$c,local]=$(run_vbk "local:$work/store" "$type" "$bs" "$pat" "$total")
  fi
  if has rados; then
    res[$c,rados]=$(run_vbk "rados:$POOL?conf=$conf" \
                      "$type" "$bs" "$pat" "$total")
    res[$c,rbd]=$(run_rbd "$type" "$bs" "$pat" "$total")
  fi
done

printf '\n%-16s %8s %14s %14s %14s %8s\n' "" "" "vbk local" "vbk rados" \
  "rbd bench" "rados/"
printf '%-16s %8s %14s %14s %14s %8s\n' "case" "total" "MiB/s   IOPS" \
  "MiB/s   IOPS" "MiB/s   IOPS" "rbd"
for c in "${CASES[@]}"; do
  read -r type bs pat total <<<"$c"
  cols=()
  for k in local rados rbd; do
    v=${res[$c,$k]:-}
    if [ -n "$v" ]; then
      # shellcheck disable=SC2086
      cols+=("$(printf '%6.1f %7.0f' $v)")
    else
      cols+=("-")
    fi
  done
  ratio=-
  if [ -n "${res[$c,rados]:-}" ]; then
    ratio=$(awk -v a="${res[$c,rados]%% *}" -v b="${res[$c,rbd]%% *}" \
              'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  fi
  printf '%-16s %8s %14s %14s %14s %8s\n' "$type $bs $pat" "$total" \
    "${cols[0]}" "${cols[1]}" "${cols[2]}" "$ratio"
done
