#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-fuzz.sh - builds backup/fuzz-backup.c with clang
# -fsanitize=fuzzer,address (the real manifest, index and chunk parsers)
# and runs it for $VBK_FUZZ_SECONDS (default 30) seconds from a corpus of
# well-formed objects of each kind, encrypted chunks and sealed objects
# included (their authentication tags do not match: every mutation of a
# real one fails there too, so the fuzzer works on the headers).  Any crash, leak or sanitizer report
# fails the test.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires clang
seconds=${VBK_FUZZ_SECONDS:-30}
out=$TEST_DIR/fuzz-backup

clang -g -O1 -fsanitize=fuzzer,address -fno-omit-frame-pointer \
  -D_GNU_SOURCE -I"$VBK_SRC" $(pkg-config --cflags json-c liblz4) \
  -o "$out" "$VBK_SRC"/backup/fuzz-backup.c "$VBK_SRC"/backup/format.c "$VBK_SRC"/backup/crypt.c \
  "$VBK_SRC"/common/error.c \
  $(pkg-config --libs json-c liblz4 libcrypto zlib) ||
  fail "cannot build the fuzzer"

corpus=$TEST_DIR/corpus
mkdir -p "$corpus"
python3 - "$corpus" <<'PY'
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
# the nonce at 20.
ct = os.urandom(300)
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 1, 1, 1000, len(ct) + 16, 0) + os.urandom(12)
w("chunk-enc", 3, hdr + ct + os.urandom(16))
hdr = b"VBKC" + struct.pack("<HBBIII", 1, 0, 1, 300, len(ct) + 16, 0) + os.urandom(12)
w("chunk-enc-raw", 3, hdr + ct + os.urandom(16))
w("sealed", 4, b"VBKE" + struct.pack("<HH", 1, 0) + os.urandom(12) + os.urandom(200) + os.urandom(16))
PY

start=$(date +%s)
cd "$TEST_DIR"
"$out" -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 "$corpus" >"$TEST_DIR/fuzz.log" 2>&1 ||
  fail "fuzzer found a problem: $(grep -E 'ERROR|SUMMARY|Test unit' "$TEST_DIR/fuzz.log" | head -5)"
runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$TEST_DIR/fuzz.log" | grep -Eo '[0-9]+$' || echo "?")
echo "backup fuzz: ran clean for $(( $(date +%s) - start ))s, $runs inputs"
