# SPDX-License-Identifier: MIT
#
# functions.sh - shared by the end-to-end tests (tests/e2e/*.sh).
# Source it first:  . "$VBK_SRC/tests/functions.sh"
#
# The environment (set by ctest, see tests/CMakeLists.txt):
#   VBK_BIN              build/bin, holding vbk and vbk-blockd
#   VBK_SRC              the source tree
#   VBK_TEST_STORE_KIND  local | rados | none
#   CEPH_CONF, VBK_TEST_POOL   the test cluster (rados)

set -euo pipefail

: "${VBK_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${VBK_BIN:=$VBK_SRC/build/bin}"
: "${VBK_TEST_STORE_KIND:=local}"
[ "$VBK_TEST_STORE_KIND" = none ] && VBK_TEST_STORE_KIND=local
: "${VBK_TEST_POOL:=vbk}"
export VBK_BIN VBK_SRC VBK_TEST_STORE_KIND VBK_TEST_POOL

# A scratch directory for this test, removed at exit.
TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/vbk-e2e.XXXXXX")
export TEST_DIR

_cleanup_fns=()
# cleanup_fn CMD ARGS...: run at exit, last registered first.
cleanup_fn () { _cleanup_fns+=("$*"); }
_run_cleanup ()
{
  local rc=$? i f
  for ((i = ${#_cleanup_fns[@]} - 1; i >= 0; i--)); do
    eval "${_cleanup_fns[$i]}" || true
  done
  # On failure, show the end of every daemon log the test kept.
  if [ "$rc" -ne 0 ]; then
    for f in "$TEST_DIR"/*.log; do
      [ -f "$f" ] || continue
      echo "---- last lines of $(basename "$f"):" >&2
      tail -n 80 "$f" >&2
    done
  fi
  rm -rf "$TEST_DIR"
  exit $rc
}
trap _run_cleanup EXIT

fail () { echo "FAIL: $*" >&2; exit 1; }

# requires TOOL: the test cannot run without it (install-deps installs
# every tool the tests use, so a missing one is a failure, not a skip).
requires ()
{
  type -P "$1" >/dev/null 2>&1 || fail "required tool '$1' is missing (run deploy/install-deps.sh)"
}

# The sync interposer (tests/shim/syncshim.c).  requires_syncshim: the
# test needs it built.  syncshim MATCH ERRNO CMD...: runs CMD with the
# interposer on the syncs of files whose path contains MATCH (ERRNO 0:
# they sync; else they fail with it), a fresh log of them in $SYNC_LOG.
SYNC_CTL=$TEST_DIR/sync.ctl
SYNC_LOG=$TEST_DIR/sync.log
requires_syncshim ()
{
  [ -n "${VBK_SYNCSHIM:-}" ] && [ -f "$VBK_SYNCSHIM" ] ||
    fail "the sync interposer is not built (VBK_SYNCSHIM=${VBK_SYNCSHIM:-})"
}
syncshim ()
{
  echo "$1 0 $2" >"$SYNC_CTL"
  : >"$SYNC_LOG"
  shift 2
  VBK_SYNCSHIM_CTL=$SYNC_CTL VBK_SYNCSHIM_LOG=$SYNC_LOG LD_PRELOAD=$VBK_SYNCSHIM \
  ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 "$@"
}

# new_store: prints the URI of a new, empty store of the backend under test.
new_store ()
{
  case "$VBK_TEST_STORE_KIND" in
    local) echo "local:$(mktemp -d "$TEST_DIR/store.XXXXXX")" ;;
    rados) echo "rados:$VBK_TEST_POOL/e2e-$$-$RANDOM$RANDOM?conf=$CEPH_CONF" ;;
    *) fail "unknown VBK_TEST_STORE_KIND=$VBK_TEST_STORE_KIND" ;;
  esac
}

vbk () { "$VBK_BIN/vbk" "$@"; }
# rados_of STORE ARGS...: the rados command on the pool and namespace of
# STORE, a rados: URI from new_store (for looking under vbk's feet).
rados_of ()
{
  local ns=${1#rados:"$VBK_TEST_POOL"/}
  shift
  ns=${ns%%\?*}
  rados -c "$CEPH_CONF" -p "$VBK_TEST_POOL" -N "$ns" "$@"
}
# nbdsh ARGS...: nbdsh with the system python3 first on PATH (nbdsh runs
# "python3 -m nbd"; the Debian python has the libnbd bindings).
nbdsh () { PATH=/usr/bin:$PATH command nbdsh "$@"; }

# expect_fail REGEX CMD ARGS...: CMD must exit non-zero and print a line
# on stderr matching REGEX (grep -E).
expect_fail ()
{
  local re=$1 rc=0
  shift
  "$@" >"$TEST_DIR/out" 2>"$TEST_DIR/err" || rc=$?
  [ "$rc" -ne 0 ] || fail "expected failure, got success: $*"
  grep -Eq -- "$re" "$TEST_DIR/err" ||
    fail "expected an error matching '$re' from: $* (got: $(cat "$TEST_DIR/err"))"
  [ "$(wc -l <"$TEST_DIR/err")" -ge 1 ] || fail "no error message from: $*"
}

# stop_process PID: stops PID with SIGSTOP and waits until every thread
# of it has stopped.  kill returns before that: the signal stops the
# process only once one of its threads has been scheduled to take it, so
# on a loaded machine the others may run on for a while (over 100 ms was
# measured) and answer a request sent just after kill.
stop_process ()
{
  local pid=$1 i t st all
  kill -STOP "$pid"
  for ((i = 0; i < 1200; i++)); do
    all=1
    for t in /proc/"$pid"/task/*/stat; do
      # "TID (COMM) STATE ...": COMM may hold spaces and parentheses.
      st=$(sed 's/.*) //' "$t" 2>/dev/null) || continue
      case ${st:0:1} in T | t) ;; *) all=0; break ;; esac
    done
    [ "$all" = 1 ] && return 0
    sleep 0.05
  done
  fail "process $pid did not stop within 60 s of SIGSTOP"
}

# wait_for_socket PATH [SECONDS [PID]]: waits until the socket PATH
# exists, at most SECONDS (default 60: vbk-blockd connects to the store
# before it listens, which on a loaded machine with RADOS can take
# seconds); fails early if process PID has ended.
wait_for_socket ()
{
  local i
  for ((i = 0; i < ${2:-60} * 20; i++)); do
    [ -S "$1" ] && return 0
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
      fail "socket $1 did not appear: process $3 ended"
    fi
    sleep 0.05
  done
  fail "socket $1 did not appear within ${2:-60} s"
}

# expect_status CODE REGEX CMD ARGS...: CMD must exit with CODE and print
# exactly one line on stderr, starting with "vbk: " and matching REGEX
# (grep -E).
expect_status ()
{
  local code=$1 re=$2 rc=0
  shift 2
  "$@" >"$TEST_DIR/out" 2>"$TEST_DIR/err" || rc=$?
  [ "$rc" -eq "$code" ] ||
    fail "expected exit $code, got $rc from: $* (stderr: $(cat "$TEST_DIR/err"))"
  [ "$(wc -l <"$TEST_DIR/err")" -eq 1 ] ||
    fail "expected one line on stderr from: $* (got: $(cat "$TEST_DIR/err"))"
  grep -q '^vbk: ' "$TEST_DIR/err" ||
    fail "stderr does not start with 'vbk: ': $(cat "$TEST_DIR/err")"
  grep -Eq -- "$re" "$TEST_DIR/err" ||
    fail "expected an error matching '$re' from: $* (got: $(cat "$TEST_DIR/err"))"
}

# json_check PYTHON-EXPRESSION: the expression must be true, evaluated
# with d = the JSON on stdin, M = 1 MiB and now = the wall clock in ms.
json_check ()
{
  python3 -c '
import json, sys, time
d = json.load(sys.stdin)
M = 1 << 20
now = time.time() * 1000
if not eval("(" + sys.argv[1] + ")"):
    sys.exit("check failed: %s\nJSON: %s" % (sys.argv[1], json.dumps(d)))
' "$1" || fail "JSON check failed: $1"
}

# python_with_nbd: prints a python3 that has the libnbd bindings
# (python3-libnbd): the Debian one; another python3 first on PATH may
# not have them.
python_with_nbd ()
{
  local p
  for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import nbd' 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  fail "no python3 with the nbd module (install python3-libnbd)"
}

# free_tcp_port: prints a TCP port that is free on 127.0.0.1 now (the
# kernel's choice; a daemon started right after binds it).
free_tcp_port ()
{
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

declare -A _blockd_log
# start_blockd VAR SOCKET [ARGS...]: starts vbk-blockd on the test's
# store ($store) listening on SOCKET (a file left there is removed
# first), with ARGS added to its command line, and waits for the socket.
# Its pid goes to the variable VAR; it is killed at exit (also when
# stopped).  It logs to $TEST_DIR/NAME.log, NAME being SOCKET's file name
# without .sock, where the failure handler shows it.
start_blockd ()
{
  local _var=$1 _sock=$2 _log
  shift 2
  _log=$TEST_DIR/$(basename "$_sock" .sock).log
  rm -f "$_sock"
  "$VBK_BIN/vbk-blockd" --store "$store" --socket "$_sock" "$@" 2>>"$_log" &
  printf -v "$_var" %s $!
  _blockd_log[$!]=$_log
  cleanup_fn "kill -CONT $! 2>/dev/null; kill -9 $! 2>/dev/null"
  wait_for_socket "$_sock" 60 "$!"
}

# stop_blockd VAR: stops the vbk-blockd whose pid is in VAR with SIGTERM;
# it must exit 0.
stop_blockd ()
{
  local _pid=${!1} _rc=0 _log
  _log=${_blockd_log[$_pid]}
  kill -TERM "$_pid"
  wait "$_pid" || _rc=$?
  [ "$_rc" -eq 0 ] ||
    fail "vbk-blockd $(basename "$_log" .log) exited $_rc after SIGTERM (log: $(tail -5 "$_log"))"
}

# Tests where several vbk-blockd play hosts that share the image "disk":
# start_host NAME [ARGS...]: vbk-blockd as host NAME (start_blockd): host
# id "hostNAME", socket $TEST_DIR/NAME.sock, log NAME.log, leases of 3 s
# (a --lease-duration in ARGS wins), pid in pid_NAME.
start_host ()
{
  local name=$1
  shift
  start_blockd "pid_$name" "$TEST_DIR/$name.sock" --host-id "host$name" \
    --lease-duration 3 "$@"
}
# host_uri NAME [IMAGE]: the NBD URI of IMAGE (default disk) on host NAME.
host_uri () { echo "nbd+unix:///${2:-disk}?socket=$TEST_DIR/$1.sock"; }
# keep_open NAME [IMAGE]: an idle client of IMAGE (default disk) on host
# NAME for the rest of the test, as a VM's QEMU would be (a daemon closes
# an export, releasing its lease, when its last client goes); its pid in
# keeper_NAME.
keep_open ()
{
  local ready=$TEST_DIR/keeper-$1-$RANDOM i
  (PATH=/usr/bin:$PATH READY=$ready exec nbdsh -u "$(host_uri "$1" "${2:-disk}")" \
     -c 'import os, time; open(os.environ["READY"], "w").close(); time.sleep(3600)') &
  cleanup_fn "kill $! 2>/dev/null"
  eval "keeper_$1=$!"
  for ((i = 0; i < 200; i++)); do [ -e "$ready" ] && return 0; sleep 0.05; done
  fail "idle client of $1 did not connect"
}
# holder [IMAGE]: the host id that holds the lease of IMAGE (default
# disk), or "none".
holder ()
{
  vbk --store "$store" lease status "${1:-disk}" --json |
    python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["host"] if v["held"] else "none")'
}
# host_logs [NAME...]: the last lines of the logs of hosts NAME...
# (default: A and B).
host_logs ()
{
  local n files=()
  [ $# -gt 0 ] || set -- A B
  for n; do files+=("$TEST_DIR/$n.log"); done
  tail -n 20 "${files[@]}"
}
# now_ms: the wall clock in ms.
now_ms () { date +%s%3N; }

# The pattern writer's progress (tests/tools/pattern-io.py --progress
# $TEST_DIR/progress: "ACKED FAILED INFLIGHT"), for a writer started in
# the background as $writer with its output in $TEST_DIR/writer.out.
progress () { cat "$TEST_DIR/progress" 2>/dev/null || echo "0 0 0"; }
acked () { read -r a f q < <(progress); echo "$a"; }
# pattern_start URI ROUND RECORD BLOCKS [ARG...]: starts the pattern
# writer (tests/tools/pattern-io.py write, run by $PY, which the script
# sets with python_with_nbd) in the background as $writer: it writes
# until $TEST_DIR/stop exists, with its progress in $TEST_DIR/progress.
pattern_start ()
{
  rm -f "$TEST_DIR/stop" "$TEST_DIR/progress"
  "$PY" "$VBK_SRC/tests/tools/pattern-io.py" write "$1" "$2" "$3" \
    --blocks "$4" --until "$TEST_DIR/stop" --progress "$TEST_DIR/progress" \
    "${@:5}" >"$TEST_DIR/writer.out" 2>&1 &
  writer=$!
}
# pattern_end URI RECORD BLOCKS [WHAT]: stops the writer; it must end
# cleanly, with no failed write, and everything must read back.  WHAT
# starts the failure messages.
pattern_end ()
{
  local w=${4:+$4: }
  touch "$TEST_DIR/stop"
  wait "$writer" || fail "${w}writer failed: $(cat "$TEST_DIR/writer.out")"
  cat "$TEST_DIR/writer.out"
  grep -q 'ended by stopped$' "$TEST_DIR/writer.out" ||
    fail "${w}the stream ended by an error: $(cat "$TEST_DIR/writer.out")"
  "$PY" "$VBK_SRC/tests/tools/pattern-io.py" verify "$1" "$2" \
    "$TEST_DIR/state.json" --blocks "$3" || fail "${w}data lost or corrupted"
}
# stream_start INNER: the setup of a stream of writes through one
# vbk-blockd: makes the image "disk" (16 MiB, 1 MiB objects) on the
# store INNER, starts vbk-blockd on $store (INNER or a fault: store
# around it) as hostA with 2 s leases (pid in $pid, socket
# $TEST_DIR/blockd.sock, its URI in $uri), then the pattern writer over
# $blocks blocks (record $TEST_DIR/record.json, stopped by pattern_end),
# and returns once 50 writes are acknowledged.
stream_start ()
{
  vbk --store "$1" image create disk --size 16M --object-size 1M >/dev/null
  uri="nbd+unix:///disk?socket=$TEST_DIR/blockd.sock"
  start_blockd pid "$TEST_DIR/blockd.sock" --host-id hostA --lease-duration 2
  pattern_start "$uri" 1 "$TEST_DIR/record.json" "$blocks"
  more_acked 50
}
# wait_held FILE MESSAGE: waits up to 10 s until the fault store holds a
# request back (FILE.held exists, see store/fault.c), else fails.
wait_held ()
{
  local i
  for ((i = 0; i < 100; i++)); do
    [ -e "$1.held" ] && return 0
    sleep 0.1
  done
  fail "$2"
}
# more_acked N [SECONDS]: waits until more than N writes are acknowledged.
more_acked ()
{
  local i
  for ((i = 0; i < ${2:-60} * 10; i++)); do
    [ "$(acked)" -gt "$1" ] && return 0
    kill -0 "$writer" 2>/dev/null || fail "the writer ended: $(cat "$TEST_DIR/writer.out")"
    sleep 0.1
  done
  fail "no write acknowledged past $1 in ${2:-60} s (progress: $(progress))"
}
