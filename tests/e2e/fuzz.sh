#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz.sh - builds blockd/fuzz-nbd.c with clang -fsanitize=fuzzer,address
# from the sources (the real handshake and request parser over a local
# store) and runs it for $VBK_FUZZ_SECONDS (default 45) seconds, starting
# from a small corpus of well-formed sessions.  Any crash, leak or
# sanitizer report fails the test.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires clang
seconds=${VBK_FUZZ_SECONDS:-45}
out=$TEST_DIR/fuzz-nbd

srcs=()
for f in "$VBK_SRC"/blockd/*.c "$VBK_SRC"/common/*.c "$VBK_SRC"/store/*.c \
         "$VBK_SRC"/image/*.c "$VBK_SRC"/locks/*.c "$VBK_SRC"/snapshot/*.c; do
  case "$f" in */blockd/main.c) continue ;; esac
  srcs+=("$f")
done
clang -g -O1 -fsanitize=fuzzer,address -fno-omit-frame-pointer \
  -D_GNU_SOURCE -I"$VBK_SRC" $(pkg-config --cflags liburcu liburcu-cds inih) \
  -o "$out" "${srcs[@]}" \
  $(pkg-config --libs liburcu liburcu-cds inih gnutls) -lrados -lpthread ||
  fail "cannot build the fuzzer"

# Seeds: a full session (structured replies, meta context, GO, a few
# requests), an EXPORT_NAME session, and a LIST.
corpus=$TEST_DIR/corpus
mkdir -p "$corpus"
python3 - "$corpus" <<'PY'
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

start=$(date +%s)
cd "$TEST_DIR"
"$out" -max_total_time="$seconds" -max_len=8192 -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 "$corpus" >"$TEST_DIR/fuzz.log" 2>&1 ||
  fail "fuzzer found a problem: $(grep -E 'ERROR|SUMMARY|Test unit' "$TEST_DIR/fuzz.log" | head -5)"
elapsed=$(( $(date +%s) - start ))
runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$TEST_DIR/fuzz.log" | grep -Eo '[0-9]+$' || echo "?")
echo "fuzz: ran clean for ${elapsed}s, $runs inputs"
