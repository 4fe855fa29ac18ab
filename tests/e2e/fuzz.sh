#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz.sh - builds the libFuzzer targets of blockd with clang
# -fsanitize=fuzzer,address from the sources (the real server code over
# a local store; tests/fuzz-build.sh) and runs each from a small corpus
# of well-formed sessions: blockd/fuzz-nbd.c (handshake and request parser) for
# $VBK_FUZZ_SECONDS (default 45) seconds, blockd/fuzz-handshake.c (the
# option phase, with every reply checked against the protocol) for
# $VBK_FUZZ_HS_SECONDS (default 30).  Any crash, leak, sanitizer report
# or protocol violation fails the test.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires clang
seconds=${VBK_FUZZ_SECONDS:-45}
hs_seconds=${VBK_FUZZ_HS_SECONDS:-30}
out=$TEST_DIR/fuzz-nbd

# The server's code instrumented once, both targets, their seed corpora.
VBK_SRC=$VBK_SRC "$VBK_SRC/tests/fuzz-build.sh" "$TEST_DIR" ||
  fail "cannot build the fuzzers"
# A target that crashes leaves its store (in /dev/shm) behind.
cleanup_fn "'$VBK_SRC/tests/fuzz-build.sh' --clean"
corpus=$TEST_DIR/corpus

start=$(date +%s)
cd "$TEST_DIR"
"$out" -max_total_time="$seconds" -max_len=8192 -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 "$corpus" >"$TEST_DIR/fuzz.log" 2>&1 ||
  fail "fuzzer found a problem: $(grep -E 'ERROR|SUMMARY|Test unit' "$TEST_DIR/fuzz.log" | head -5)"
elapsed=$(( $(date +%s) - start ))
runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$TEST_DIR/fuzz.log" | grep -Eo '[0-9]+$' || echo "?")
echo "fuzz-nbd: ran clean for ${elapsed}s, $runs inputs"

# The option phase (the seeds: raw sessions and framed option lists).
hs_corpus=$TEST_DIR/hs-corpus
start=$(date +%s)
"$TEST_DIR/fuzz-handshake" -max_total_time="$hs_seconds" -max_len=4096 \
  -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 "$hs_corpus" \
  >"$TEST_DIR/fuzz-hs.log" 2>&1 ||
  fail "handshake fuzzer found a problem: $(grep -E 'violation|ERROR|SUMMARY|Test unit' "$TEST_DIR/fuzz-hs.log" | head -5)"
elapsed=$(( $(date +%s) - start ))
runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$TEST_DIR/fuzz-hs.log" | grep -Eo '[0-9]+$' || echo "?")
echo "fuzz-handshake: ran clean for ${elapsed}s, $runs inputs"
