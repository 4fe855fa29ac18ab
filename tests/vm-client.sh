# SPDX-License-Identifier: MIT
#
# vm-client.sh - a client that stays connected to an export, as a VM's
# disk does (blockd keeps the export open, and its lease once written),
# driven one command at a time.  Source it after functions.sh:
#   vm_start NAME URI; vm NAME "write PATTERN OFFSET LENGTH"; vm NAME flush;
#   vm_stop NAME.  vm returns 0 on "ok"; the answer is in $vm_reply.

py=$(python_with_nbd)

# A client that stays connected, as a VM's disk does: blockd keeps the
# export open, and its lease once written.  It reads commands on stdin
# ("write PATTERN OFFSET LENGTH", "flush", "quit") and answers "ok" or
# "error: ...".
cat >"$TEST_DIR/vm.py" <<'PY'
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    op, *a = line.split()
    if op == "quit":
        break
    try:
        if op == "write":
            h.pwrite(bytes([int(a[0], 0)]) * int(a[2]), int(a[1]))
        elif op == "flush":
            h.flush()
        print("ok", flush=True)
    except nbd.Error as e:
        print("error: %s" % e, flush=True)
PY
declare -A vm_fd vm_pid vm_lines
vm_reply=
# vm_wait NAME: waits for the next answer of vm NAME into $vm_reply;
# 0 if it is "ok" (or "ready").
vm_wait ()
{
  local name=$1 n=$((vm_lines[$1] + 1)) i line
  for ((i = 0; i < 1200; i++)); do
    line=$(sed -n "${n}p" "$TEST_DIR/vm-$name.out")
    if [ -n "$line" ]; then
      vm_lines[$name]=$n
      vm_reply=$line
      [ "$line" = ok ] || [ "$line" = ready ]
      return
    fi
    if ! kill -0 "${vm_pid[$name]}" 2>/dev/null; then
      vm_reply="exited: $(cat "$TEST_DIR/vm-$name.out")"
      return 1
    fi
    sleep 0.05
  done
  vm_reply="no answer in 60 s"
  return 1
}
# vm_start NAME URI: connects vm NAME to URI.
vm_start ()
{
  local name=$1 fd
  mkfifo "$TEST_DIR/vm-$name.in"
  "$py" "$TEST_DIR/vm.py" "$2" <"$TEST_DIR/vm-$name.in" \
    >"$TEST_DIR/vm-$name.out" 2>&1 &
  vm_pid[$name]=$!
  cleanup_fn "kill -9 ${vm_pid[$name]} 2>/dev/null"
  exec {fd}>"$TEST_DIR/vm-$name.in"
  vm_fd[$name]=$fd
  vm_lines[$name]=0
  vm_wait "$name" || fail "vm $name did not connect: $vm_reply"
}
# vm NAME COMMAND: 0 if vm NAME ran COMMAND ("ok").
vm () { echo "$2" >&"${vm_fd[$1]}"; vm_wait "$1"; }
# vm_stop NAME: disconnects vm NAME.  (Its stdin does not end when we
# close our end: processes started later inherited it.)
vm_stop ()
{
  echo quit >&"${vm_fd[$1]}"
  wait "${vm_pid[$1]}" || true
  eval "exec ${vm_fd[$1]}>&-"
}
