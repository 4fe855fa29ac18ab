#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-bench.sh [SIZE] - vbk-blockd on a local store against qemu-nbd on
# a raw file and nbdkit's file plugin, same machine, same run, Unix
# sockets, fio's nbd engine (libnbd).  Each workload runs on the three
# servers back to back (interleaved), REPEAT times (default 1), and the
# table shows the median with the ratios vbk/qemu-nbd and vbk/nbdkit.
# Not a test: numbers depend on the machine.  Env: VBK_BIN (build/bin),
# BENCH_DIR (a scratch directory, default a new one under /tmp),
# RUNTIME (seconds per run, default 4), REPEAT, ONLY_TLS=1 (the TLS rows
# alone).
#
# Then TLS rows (TLS=0 skips them): vbk-blockd and qemu-nbd on TCP
# loopback with NBD over TLS, the same X.509 certificates
# (deploy/make-tls-certs.sh; qemu-nbd --object tls-creds-x509,...,
# endpoint=server --tls-creds), fio connecting with nbds:// (libnbd finds
# the client certificate in $HOME/.pki/libnbd, which it reads only for a
# user other than root: as root fio runs as nobody), plus vbk-blockd on
# plain TCP loopback for the cost of TLS itself.
set -euo pipefail

size=${1:-1G}
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

wait_sock () { for _ in $(seq 100); do [ -S "$1" ] && return; sleep 0.05; done; echo "no $1" >&2; exit 1; }

echo "preparing $size of random data ..." >&2
head -c "$size" /dev/urandom >"$dir/data.raw"
cp "$dir/data.raw" "$dir/qemu.raw"
cp "$dir/data.raw" "$dir/nbdkit.raw"

store="local:$dir/store"
"$bin/vbk" --store "$store" image create bench --size "$size" >/dev/null
"$bin/vbk-blockd" --store "$store" --socket "$dir/vbk.sock" 2>"$dir/vbk.log" &
pids+=($!)
qemu-nbd -f raw -t -e 4 --cache=writeback -k "$dir/qemu.sock" "$dir/qemu.raw" &
pids+=($!)
nbdkit -f -U "$dir/nbdkit.sock" file "$dir/nbdkit.raw" &
pids+=($!)
wait_sock "$dir/vbk.sock"; wait_sock "$dir/qemu.sock"; wait_sock "$dir/nbdkit.sock"
nbdcopy --connections=4 --threads=4 "$dir/data.raw" "nbd+unix:///bench?socket=$dir/vbk.sock"

declare -A uri=(
  [vbk]="nbd+unix:///bench?socket=$dir/vbk.sock"
  [qemu]="nbd+unix:///?socket=$dir/qemu.sock"
  [nbdkit]="nbd+unix:///?socket=$dir/nbdkit.sock"
)
# name rw bs iodepth unit
workloads=(
  "4K-randread-QD1 randread 4k 1 kIOPS"
  "4K-randread-QD16 randread 4k 16 kIOPS"
  "4K-randwrite-QD1 randwrite 4k 1 kIOPS"
  "4K-randwrite-QD16 randwrite 4k 16 kIOPS"
  "1M-seqread-QD8 read 1M 8 MB/s"
  "1M-seqwrite-QD8 write 1M 8 MB/s"
)

# run SERVER RW BS QD: prints kIOPS or MB/s
run () {
  local out="$dir/fio.json" dirn
  fio --name=bench --ioengine=nbd --uri="${uri[$1]}" --rw="$2" --bs="$3" \
      --iodepth="$4" --time_based --runtime="$runtime" --ramp_time=1 \
      --output-format=json --output="$out" >/dev/null 2>&1
  case "$2" in *read) dirn=read ;; *) dirn=write ;; esac
  python3 - "$out" "$dirn" "$3" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0][sys.argv[2]]
if sys.argv[3] == "4k":
    print("%.1f" % (j["iops"] / 1000))
else:
    print("%.0f" % (j["bw_bytes"] / 1e6))
PY
}

median () { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ONLY_TLS=1: the TLS rows alone.
[ "${ONLY_TLS:-0}" = 1 ] && workloads=()
printf '%-20s %-6s %9s %9s %9s %10s %10s\n' workload unit vbk qemu-nbd nbdkit vbk/qemu vbk/nbdkit
for w in "${workloads[@]}"; do
  read -r name rw bs qd unit <<<"$w"
  declare -a rv=() rq=() rk=()
  for ((i = 0; i < repeat; i++)); do
    rv+=("$(run vbk "$rw" "$bs" "$qd")")
    rq+=("$(run qemu "$rw" "$bs" "$qd")")
    rk+=("$(run nbdkit "$rw" "$bs" "$qd")")
  done
  v=$(median "${rv[@]}"); q=$(median "${rq[@]}"); k=$(median "${rk[@]}")
  printf '%-20s %-6s %9s %9s %9s %10s %10s\n' "$name" "$unit" "$v" "$q" "$k" \
    "$(awk -v a="$v" -v b="$q" 'BEGIN{printf "%.2f", (b>0?a/b:0)}')" \
    "$(awk -v a="$v" -v b="$k" 'BEGIN{printf "%.2f", (b>0?a/b:0)}')"
done

[ "$tls_rows" = 1 ] || exit 0

# ---- TLS over TCP loopback -------------------------------------------------
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
free_port () { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pv=$(free_port); pq=$(free_port); pp=$(free_port)
"$bin/vbk-blockd" --store "$store" --socket "$dir/vbk-tls.sock" \
  --listen "127.0.0.1:$pv" --tls-certificates "$dir/certs/server" \
  --config "$dir/tls.conf" 2>"$dir/vbk-tls.log" &
pids+=($!)
"$bin/vbk-blockd" --store "$store" --socket "$dir/vbk-tcp.sock" \
  --listen "127.0.0.1:$pp" 2>"$dir/vbk-tcp.log" &
pids+=($!)
qemu-nbd -f raw -t -e 4 --cache=writeback -b 127.0.0.1 -p "$pq" -x bench \
  --object "tls-creds-x509,id=tls0,dir=$dir/certs/server,endpoint=server" \
  --tls-creds tls0 "$dir/qemu.raw" &
pids+=($!)
wait_sock "$dir/vbk-tls.sock"; wait_sock "$dir/vbk-tcp.sock"
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

# run_tls SERVER RW BS QD: as run, as the TLS client user
run_tls () {
  local out="$dir/tlsrun/fio.json" dirn
  rm -f "$out"
  tls_client fio --name=bench --ioengine=nbd --uri="${uri[$1]}" --rw="$2" \
      --bs="$3" --iodepth="$4" --time_based --runtime="$runtime" \
      --ramp_time=1 --output-format=json --output="$out" >/dev/null 2>&1
  case "$2" in *read) dirn=read ;; *) dirn=write ;; esac
  python3 - "$out" "$dirn" "$3" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0][sys.argv[2]]
if sys.argv[3] == "4k":
    print("%.1f" % (j["iops"] / 1000))
else:
    print("%.0f" % (j["bw_bytes"] / 1e6))
PY
}

echo
printf '%-20s %-6s %9s %9s %9s %12s %12s\n' workload unit vbk-tls qemu-tls vbk-tcp \
  vbk/qemu-tls tls/tcp-vbk
for w in "4K-randread-QD16 randread 4k 16 kIOPS" \
         "4K-randwrite-QD16 randwrite 4k 16 kIOPS" \
         "1M-seqread-QD8 read 1M 8 MB/s" \
         "1M-seqwrite-QD8 write 1M 8 MB/s"; do
  read -r name rw bs qd unit <<<"$w"
  declare -a rv=() rq=() rp=()
  for ((i = 0; i < repeat; i++)); do
    rv+=("$(run_tls vbktls "$rw" "$bs" "$qd")")
    rq+=("$(run_tls qemutls "$rw" "$bs" "$qd")")
    rp+=("$(run_tls vbktcp "$rw" "$bs" "$qd")")
  done
  v=$(median "${rv[@]}"); q=$(median "${rq[@]}"); t=$(median "${rp[@]}")
  printf '%-20s %-6s %9s %9s %9s %12s %12s\n' "$name" "$unit" "$v" "$q" "$t" \
    "$(awk -v a="$v" -v b="$q" 'BEGIN{printf "%.2f", (b>0?a/b:0)}')" \
    "$(awk -v a="$v" -v b="$t" 'BEGIN{printf "%.2f", (b>0?a/b:0)}')"
done
