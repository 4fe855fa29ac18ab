#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz.sh - builds the libFuzzer targets of blockd with clang
# -fsanitize=fuzzer,address from the sources (the real server code over
# a local store) and runs each from a small corpus of well-formed
# sessions: blockd/fuzz-nbd.c (handshake and request parser) for
# $VBK_FUZZ_SECONDS (default 45) seconds, blockd/fuzz-handshake.c (the
# option phase, with every reply checked against the protocol) for
# $VBK_FUZZ_HS_SECONDS (default 30).  Any crash, leak, sanitizer report
# or protocol violation fails the test.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires clang
seconds=${VBK_FUZZ_SECONDS:-45}
hs_seconds=${VBK_FUZZ_HS_SECONDS:-30}
out=$TEST_DIR/fuzz-nbd

# The server's code once, then each target linked against it.
cflags=(-g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE -I"$VBK_SRC"
        $(pkg-config --cflags liburcu liburcu-cds inih json-c))
libs=($(pkg-config --libs liburcu liburcu-cds inih gnutls liblz4 json-c libcrypto zlib) -lrados -lpthread)
objs=()
mkdir -p "$TEST_DIR/obj"
for f in "$VBK_SRC"/blockd/*.c "$VBK_SRC"/common/*.c "$VBK_SRC"/store/*.c \
         "$VBK_SRC"/image/*.c "$VBK_SRC"/locks/*.c "$VBK_SRC"/snapshot/*.c \
         "$VBK_SRC"/copy/*.c "$VBK_SRC"/backup/*.c; do
  case "$f" in */blockd/main.c|*/fuzz-*.c) continue ;; esac
  o=$TEST_DIR/obj/$(basename "$(dirname "$f")")-$(basename "$f" .c).o
  # Two compilers at a time.
  [ "$(jobs -rp | wc -l)" -lt 2 ] || wait -n || true
  clang "${cflags[@]}" -fsanitize=fuzzer-no-link,address -c "$f" -o "$o" &
  objs+=("$o")
done
wait
for o in "${objs[@]}"; do
  [ -s "$o" ] || fail "cannot build $(basename "$o" .o) for the fuzzers"
done
for t in fuzz-nbd fuzz-handshake; do
  clang "${cflags[@]}" -fsanitize=fuzzer,address -o "$TEST_DIR/$t" \
    "$VBK_SRC/blockd/$t.c" "${objs[@]}" "${libs[@]}" ||
    fail "cannot build the fuzzer $t"
done

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
echo "fuzz-nbd: ran clean for ${elapsed}s, $runs inputs"

# The option phase: raw sessions and framed option lists (first byte
# even: raw bytes after it; odd: records of option, 16-bit length, data).
hs_corpus=$TEST_DIR/hs-corpus
mkdir -p "$hs_corpus"
python3 - "$hs_corpus" <<'PY'
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
start=$(date +%s)
"$TEST_DIR/fuzz-handshake" -max_total_time="$hs_seconds" -max_len=4096 \
  -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 "$hs_corpus" \
  >"$TEST_DIR/fuzz-hs.log" 2>&1 ||
  fail "handshake fuzzer found a problem: $(grep -E 'violation|ERROR|SUMMARY|Test unit' "$TEST_DIR/fuzz-hs.log" | head -5)"
elapsed=$(( $(date +%s) - start ))
runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$TEST_DIR/fuzz-hs.log" | grep -Eo '[0-9]+$' || echo "?")
echo "fuzz-handshake: ran clean for ${elapsed}s, $runs inputs"
