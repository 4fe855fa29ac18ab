#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# backup-fuzz.sh - builds backup/fuzz-backup.c with clang
# -fsanitize=fuzzer,address (the real manifest, index and chunk parsers;
# tests/fuzz-build.sh)
# and runs it for $VBK_FUZZ_SECONDS (default 30) seconds from a corpus of
# well-formed objects of each kind, encrypted chunks and sealed objects
# included (their authentication tags do not match: every mutation of a
# real one fails there too, so the fuzzer works on the headers).  Any crash, leak or sanitizer report
# fails the test.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

requires clang
seconds=${VBK_FUZZ_SECONDS:-30}
out=$TEST_DIR/fuzz-backup

VBK_SRC=$VBK_SRC "$VBK_SRC/tests/fuzz-build.sh" "$TEST_DIR" backup ||
  fail "cannot build the fuzzer"
corpus=$TEST_DIR/backup-corpus

start=$(date +%s)
cd "$TEST_DIR"
"$out" -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=2048 \
  -print_final_stats=1 "$corpus" >"$TEST_DIR/fuzz.log" 2>&1 ||
  fail "fuzzer found a problem: $(grep -E 'ERROR|SUMMARY|Test unit' "$TEST_DIR/fuzz.log" | head -5)"
runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$TEST_DIR/fuzz.log" | grep -Eo '[0-9]+$' || echo "?")
echo "backup fuzz: ran clean for $(( $(date +%s) - start ))s, $runs inputs"
