#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# blockd-socket.sh - what vbk-blockd does with the file at --socket PATH:
# a regular file or a live server's socket is never removed (the daemon
# refuses to start, with a clear error), a stale socket (its server was
# killed) is replaced; the socket is created 0660 and --socket-group
# hands it to a group.

. "${VBK_SRC:-$(dirname "$0")/../..}/tests/functions.sh"

store=$(new_store)
sock=$TEST_DIR/blockd.sock
vbk --store "$store" image create disk --size 16M >/dev/null

# run_blockd PATH ARGS...: a vbk-blockd that must refuse to start; its
# stderr in $TEST_DIR/refused.err.
refused ()
{
  local path=$1 rc=0
  shift
  timeout 10 "$VBK_BIN/vbk-blockd" --store "$store" --socket "$path" "$@" \
    2>"$TEST_DIR/refused.err" || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] ||
    fail "vbk-blockd started (or hung, exit $rc) on $path: $(cat "$TEST_DIR/refused.err")"
}

# A regular file at the path: kept, and the daemon says why it stops.
echo "precious data" >"$TEST_DIR/file.sock"
refused "$TEST_DIR/file.sock"
grep -q "not a socket" "$TEST_DIR/refused.err" ||
  fail "no clear error for a regular file: $(cat "$TEST_DIR/refused.err")"
[ "$(cat "$TEST_DIR/file.sock")" = "precious data" ] ||
  fail "the regular file at --socket was removed or changed"

# A directory is not removed either.
mkdir "$TEST_DIR/dir.sock"
refused "$TEST_DIR/dir.sock"
[ -d "$TEST_DIR/dir.sock" ] || fail "the directory at --socket was removed"

# A live server's socket: refused, and the server keeps serving.
start_blockd pid "$sock"
refused "$sock"
grep -q "another server is listening" "$TEST_DIR/refused.err" ||
  fail "no clear error for a live socket: $(cat "$TEST_DIR/refused.err")"
[ -S "$sock" ] || fail "the live socket was removed"
nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null ||
  fail "the first server stopped answering"

# Mode 0660 whatever the umask.
mode=$(stat -c %a "$sock")
[ "$mode" = 660 ] || fail "socket mode $mode, expected 660"

# A stale socket (its server killed): replaced.
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
[ -S "$sock" ] || fail "the killed server's socket is gone (test setup)"
"$VBK_BIN/vbk-blockd" --store "$store" --socket "$sock" 2>>"$TEST_DIR/stale.log" &
pid2=$!
cleanup_fn "kill -9 $pid2 2>/dev/null"
for ((i = 0; i < 200; i++)); do
  nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null 2>&1 && break
  kill -0 "$pid2" 2>/dev/null || fail "vbk-blockd refused a stale socket: $(cat "$TEST_DIR/stale.log")"
  sleep 0.05
done
nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null ||
  fail "no server on the replaced stale socket"
kill -TERM "$pid2"; wait "$pid2"

# --socket-group: our own group works, an unknown one is an error.
grp=$(id -gn)
start_blockd pid3 "$TEST_DIR/grp.sock" --socket-group "$grp"
[ "$(stat -c %G "$TEST_DIR/grp.sock")" = "$grp" ] ||
  fail "socket group $(stat -c %G "$TEST_DIR/grp.sock"), expected $grp"
[ "$(stat -c %a "$TEST_DIR/grp.sock")" = 660 ] || fail "group socket not 0660"
stop_blockd pid3
refused "$TEST_DIR/nogrp.sock" --socket-group no-such-group-vbk
grep -q "no such group" "$TEST_DIR/refused.err" ||
  fail "no clear error for an unknown group: $(cat "$TEST_DIR/refused.err")"
[ ! -e "$TEST_DIR/nogrp.sock" ] || fail "socket left behind after a refused group"
echo "blockd-socket: ok"
