#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz-build.sh OUT [blockd|backup] - builds libFuzzer targets with clang
# -fsanitize=fuzzer,address into OUT and writes their seed corpora.
#   blockd (default): fuzz-nbd and fuzz-handshake, the server's code and
#     everything under it instrumented for coverage; seeds in OUT/corpus
#     (fuzz-nbd) and OUT/hs-corpus (fuzz-handshake).
#   backup: fuzz-backup (the repository's manifest, index and chunk
#     parsers, a parted chunk's part table); seeds in OUT/backup-corpus.
# Used by tests/e2e/fuzz.sh and tests/e2e/backup-fuzz.sh (short runs in
# CI) and bench/fuzz-long.sh (long runs by hand).  VBK_FUZZ_CFLAGS adds
# compiler flags.  fuzz-build.sh --clean removes the store directories
# left by targets that crashed or were interrupted.

set -euo pipefail
: "${VBK_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

# --clean: removes the store directories that targets which crashed or
# were interrupted left (their process is gone).
if [ "${1:-}" = --clean ]; then
  for d in /dev/shm/vbk-fuzz*-[0-9]*-* /tmp/vbk-fuzz*-[0-9]*-*; do
    [ -d "$d" ] || continue
    pid=${d%-*}
    pid=${pid##*-}
    case "$pid" in *[!0-9]*|'') continue ;; esac
    kill -0 "$pid" 2>/dev/null || rm -rf "$d"
  done
  exit 0
fi
out=${1:?usage: fuzz-build.sh OUTDIR [blockd|backup]}
what=${2:-blockd}
mkdir -p "$out/obj"

if [ "$what" = backup ]; then
  clang -g -O1 -fsanitize=fuzzer,address -fno-omit-frame-pointer \
    -D_GNU_SOURCE -I"$VBK_SRC" $(pkg-config --cflags json-c liblz4) \
    ${VBK_FUZZ_CFLAGS:-} -o "$out/fuzz-backup" "$VBK_SRC"/backup/fuzz-backup.c \
    "$VBK_SRC"/backup/format.c "$VBK_SRC"/backup/crypt.c \
    "$VBK_SRC"/common/error.c \
    $(pkg-config --libs json-c liblz4 libcrypto libdeflate) || {
    echo "fuzz-build: cannot build fuzz-backup" >&2
    exit 1
  }
  mkdir -p "$out/backup-corpus"
  python3 - "$out/backup-corpus" <<'PY'
import hashlib, os, struct, sys, zlib
d = sys.argv[1]
def w(name, kind, body):
    open(os.path.join(d, name), "wb").write(bytes([kind]) + body)
man = b'{"format": "1.0", "id": "20260101T000000Z-00000001", "image": "d", ' \
      b'"size": 100000, "chunk_size": 16384, "chunks": 7, "time_ms": 1, ' \
      b'"snapshot": "vbkbk-x", "parent": null, "tags": ["a"], "group": null, ' \
      b'"protected": false, "index_sha256": "' + b"ab" * 32 + b'"}'
w("manifest", 0, man)
idx = b"VBKINDEX" + struct.pack("<HHIQQ", 1, 0, 16384, 100000, 7) + bytes(32) + \
      b"".join(hashlib.sha256(bytes([i])).digest() for i in range(7))
w("index", 1, idx)
raw = b"hello world " * 100
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 0, 0, len(raw), len(raw), zlib.crc32(raw)) + bytes(12)
w("chunk-raw", 2, hdr + raw)
# An LZ4 block of literals only: token 0xF0 + lengths, then the bytes.
lit = b"abcdefghijklmnopqrstuvwxyz"
blk = bytes([0xF0, len(lit) - 15]) + lit
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 1, 0, len(lit), len(blk), zlib.crc32(blk)) + bytes(12)
w("chunk-lz4", 2, hdr + blk)
# Encrypted: flags 1, stored size = ciphertext + 16-byte tag, no CRC,
# the nonce at 20.  The tags do not match, so the fuzzer works on the
# headers.
ct = os.urandom(300)
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 1, 1, 1000, len(ct) + 16, 0) + os.urandom(12)
w("chunk-enc", 3, hdr + ct + os.urandom(16))
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 0, 1, 300, len(ct) + 16, 0) + os.urandom(12)
w("chunk-enc-raw", 3, hdr + ct + os.urandom(16))
# Parted (major 2): 4 KiB parts (shift 12), one raw and one LZ4 part and
# a short raw last part, the table's CRC-32 at 16, the part count at 20.
def parted(parts, plain):
    tab = b"".join(struct.pack("<IIB3x", len(b), zlib.crc32(b), c) for c, b in parts)
    body = b"".join(b for _, b in parts)
    return b"VBKC" + struct.pack("<HBBIIII", 2, 12, 0, plain, len(tab) + len(body),
                                 zlib.crc32(tab), len(parts)) + bytes(8) + tab + body
lit4k = bytes([0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
               0xFF, 0xFF, 0xFF, 0xFF, 0x01]) + bytes(range(256)) * 16
pc = parted([(0, os.urandom(4096)), (1, lit4k), (0, b"tail")], 8192 + 4)
for k in (2, 5, 6):
    w("chunk-parted-%d" % k, k, pc)
w("sealed", 4, b"VBKE" + struct.pack("<HH", 1, 0) + os.urandom(12) + os.urandom(200) + os.urandom(16))
PY
  exit 0
fi

# The server's code once, then each target linked against it.
cflags=(-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -I"$VBK_SRC"
        $(pkg-config --cflags liburcu liburcu-cds inih json-c liblz4))
# After the sanitizer flags, so that -fno-sanitize=address takes ASan out.
extra=(${VBK_FUZZ_CFLAGS:-})
libs=($(pkg-config --libs liburcu liburcu-cds inih gnutls liblz4 json-c libcrypto libdeflate)
      -lrados -lpthread)
objs=()
for f in "$VBK_SRC"/blockd/*.c "$VBK_SRC"/common/*.c "$VBK_SRC"/store/*.c \
         "$VBK_SRC"/image/*.c "$VBK_SRC"/locks/*.c "$VBK_SRC"/snapshot/*.c \
         "$VBK_SRC"/copy/*.c "$VBK_SRC"/backup/*.c; do
  case "$f" in */blockd/main.c|*/fuzz-*.c) continue ;; esac
  o=$out/obj/$(basename "$(dirname "$f")")-$(basename "$f" .c).o
  rm -f "$o"
  # Two compilers at a time.
  [ "$(jobs -rp | wc -l)" -lt 2 ] || wait -n || true
  clang "${cflags[@]}" -fsanitize=fuzzer-no-link,address "${extra[@]}" -c "$f" \
    -o "$o" &
  objs+=("$o")
done
wait
for o in "${objs[@]}"; do
  if [ ! -s "$o" ]; then
    echo "fuzz-build: cannot build $(basename "$o" .o) for the fuzzers" >&2
    exit 1
  fi
done
for t in fuzz-nbd fuzz-handshake; do
  if ! clang "${cflags[@]}" -fsanitize=fuzzer,address "${extra[@]}" \
       -o "$out/$t" "$VBK_SRC/blockd/$t.c" "${objs[@]}" "${libs[@]}"; then
    echo "fuzz-build: cannot build the fuzzer $t" >&2
    exit 1
  fi
done

# Seeds of fuzz-nbd: a full session (structured replies, meta context,
# GO, a few requests), an EXPORT_NAME session, and a LIST.
mkdir -p "$out/corpus" "$out/hs-corpus"
python3 - "$out/corpus" <<'PY'
import struct, sys, os
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def opt(o, data=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(data)) + data
def req(cmd, off=0, count=0, flags=0, handle=1, data=b""):
    return struct.pack(">IHHQQI", 0x25609513, flags, cmd, handle, off, count) + data
name = b"fuzz"
go = struct.pack(">I", 4) + name + struct.pack(">HH", 1, 3)
meta = struct.pack(">I", 4) + name + struct.pack(">II", 1, 15) + b"base:allocation"
s1 = (struct.pack(">I", 3) + opt(8) + opt(9, meta) + opt(10, meta) + opt(6, go)
      + opt(7, go) + req(1, 0, 512, data=b"a" * 512) + req(0, 0, 4096)
      + req(7, 0, 1 << 20) + req(6, 4096, 4096, 2) + req(4, 0, 8192)
      + req(3) + req(5, 0, 4096) + req(0, 65536, 4096, 4) + req(2))
s2 = struct.pack(">I", 1) + opt(1, name) + req(1, 512, 8, 1, data=b"b" * 8) + req(0, 0, 16) + req(2)
s3 = struct.pack(">I", 1) + opt(3) + opt(5) + opt(99, b"x") + opt(2)
for i, s in enumerate([s1, s2, s3]):
    open(os.path.join(d, "seed%d" % i), "wb").write(s)
PY

# Seeds of fuzz-handshake: raw sessions and framed option lists (first
# byte even: raw bytes after it; odd: records of option, 16-bit length,
# data).
python3 - "$out/hs-corpus" <<'PY'
import struct, sys, os
d = sys.argv[1]
IHAVEOPT = 0x49484156454F5054
def s(x): return struct.pack(">I", len(x)) + x
def meta(name, *qs):
    return s(name) + struct.pack(">I", len(qs)) + b"".join(s(q) for q in qs)
def info(name, *reqs):
    return s(name) + struct.pack(">H", len(reqs)) + b"".join(
        struct.pack(">H", r) for r in reqs)
def raw(flags, opts):
    return b"\0" + struct.pack(">I", flags) + b"".join(
        struct.pack(">QII", IHAVEOPT, o, len(x)) + x for o, x in opts)
def framed(flags, opts):
    return b"\1" + bytes([flags]) + b"".join(
        struct.pack(">BH", o, len(x)) + x for o, x in opts)
full = [(8, b""), (3, b""), (9, meta(b"disk")),
        (10, meta(b"disk", b"base:allocation", b"qemu:dirty-bitmap:s1")),
        (6, info(b"disk", 1, 2)), (7, info(b"disk", 3))]
snap = [(8, b""), (9, meta(b"disk@s1", b"base:")), (6, info(b"ro")),
        (9, meta(b"disk", b"qemu:")), (7, info(b"disk@s1", 1))]
seeds = [raw(3, full), raw(1, [(1, b"small")]), raw(3, snap),
         framed(3, full),
         framed(2, [(5, b""), (99, b"x"), (4, b""), (2, b"")]),
         framed(3, [(10, meta(b"disk", b"base:allocation")),
                    (7, info(b"disk@s2", 2, 1, 0))]),
         framed(0, [(1, b"ro")])]
for i, x in enumerate(seeds):
    open(os.path.join(d, "seed%d" % i), "wb").write(x)
PY
