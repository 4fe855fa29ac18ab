#!/bin/bash
# SPDX-License-Identifier: MIT
#
# ceph-dev-cluster.sh start|stop|status DIR
#
# A throwaway Ceph cluster on 127.0.0.1 for tests, benchmarks and demos:
# one monitor (msgr v1 only), one manager, three bluestore OSDs on sparse
# files, cephx with a single generated key shared by every entity, and a
# replicated pool "vbk" (size 3, min_size 2, 32 PGs, application rbd).
#
# Everything lives under DIR: ceph.conf, keyring, monitor/manager/OSD data,
# logs, admin sockets and the PIDs of the daemons.  Nothing is written to
# /etc/ceph or /var/lib/ceph.  The monitor port is derived from a hash of
# DIR and probed with ss, so several clusters run side by side; OSDs and
# the manager pick their own free ports.
#
# start   creates and starts the cluster, waits until every PG is
#         active+clean (or fails after CEPH_DEV_TIMEOUT seconds, 120 by
#         default) and prints DIR/ceph.conf as its last line of stdout.
#         If the cluster in DIR already runs, it says so and prints the path.
#         Leftovers of a dead cluster in DIR are removed first.
# stop    SIGKILLs exactly the recorded daemons (after checking that each
#         PID's command line names DIR/ceph.conf), then removes everything
#         this script created in DIR, and DIR itself if that leaves it
#         empty.  Other files in DIR are left alone.  Stopping a cluster
#         that does not run succeeds.
# status  prints the cluster status; exits 0 if it runs and is HEALTH_OK,
#         1 if it runs but is not healthy, 2 if it does not run.
#
# Daemons run in the foreground (-f) under setsid with stdin, stdout and
# stderr redirected, so callers such as ctest never wait on them.

set -eu
set -o pipefail
unset CEPH_ARGS

PROG=ceph-dev-cluster
TIMEOUT=${CEPH_DEV_TIMEOUT:-120}
NUM_OSDS=3
POOL=vbk
PG_NUM=32
# Everything start creates in DIR; stop removes exactly these.
OWNED="ceph.conf keyring monmap mon.port pids mon.a mgr.x osd.0 osd.1 osd.2
       run log crash .lock"

die ()
{
  echo "$PROG: $*" >&2
  exit 1
}

info ()
{
  echo "$PROG: $*" >&2
}

usage ()
{
  echo "usage: $0 start|stop|status DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
cmd=$1

case $cmd in
  start)
    mkdir -p -- "$2" || die "cannot create $2"
    ;;
  stop|status)
    if [ ! -d "$2" ]; then
      [ "$cmd" = stop ] && exit 0
      echo "$PROG: no cluster in $2" >&2
      exit 2
    fi
    ;;
  *)
    usage
    ;;
esac
DIR=$(cd -- "$2" && pwd -P) || die "cannot enter $2"
CONF=$DIR/ceph.conf

ceph_cli ()
{
  timeout 60 ceph -c "$CONF" --connect-timeout 30 "$@" </dev/null
}

# The PID of a recorded daemon if it still runs as a daemon of this
# cluster, else nothing.
live_pid ()
{
  local pid=$1
  local args
  [ -r "/proc/$pid/cmdline" ] || return 1
  args=$( { tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
  grep -qxF -- "$CONF" <<<"$args"
}

# True if every recorded daemon runs.
cluster_running ()
{
  local name pid n=0
  [ -s "$DIR/pids" ] || return 1
  while read -r name pid; do
    live_pid "$pid" || return 1
    n=$((n + 1))
  done <"$DIR/pids"
  [ "$n" -eq $((NUM_OSDS + 2)) ]
}

kill_daemons ()
{
  local name pid pids="" left
  [ -f "$DIR/pids" ] || return 0
  # The data goes away with the cluster, so there is nothing to shut down
  # cleanly; SIGTERM would only make the manager and OSDs linger for
  # seconds.
  while read -r name pid; do
    if live_pid "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      pids="$pids $pid"
    fi
  done <"$DIR/pids"
  for _ in $(seq 50); do
    left=""
    for pid in $pids; do
      live_pid "$pid" && left="$left $pid"
    done
    [ -n "$left" ] || return 0
    sleep 0.1
  done
  info "warning: daemons$left did not exit"
}

remove_data ()
{
  local f
  for f in $OWNED; do
    rm -rf -- "${DIR:?}/$f"
  done
  rmdir -- "$DIR" 2>/dev/null || true
}

# Start a daemon in its own session, record its PID.  With job control
# off, the background child is not a process group leader, so setsid
# does not fork and $! is the daemon's PID.
spawn ()
{
  local name=$1
  shift
  local pid i
  setsid "$@" -f -c "$CONF" </dev/null >>"$DIR/log/$name.out" 2>&1 9>&- &
  pid=$!
  disown "$pid"
  echo "$name $pid" >>"$DIR/pids"
  # Until the forked shell has exec'd the daemon, its command line is ours.
  for i in $(seq 100); do
    live_pid "$pid" && return 0
    [ -e "/proc/$pid" ] || break
    sleep 0.02
  done
  die "$name did not start; see $DIR/log/$name.out"
}

# Pick a monitor port: a hash of DIR into 10000-29999, then the next one
# that nothing listens on.
pick_port ()
{
  local h port i l
  h=$(printf '%s' "$DIR" | cksum | cut -d' ' -f1)
  port=$((10000 + h % 20000))
  for i in $(seq 200); do
    l=$(ss -Hltn "sport = :$port" 2>/dev/null) || l=""
    if [ -z "$l" ]; then
      echo "$port"
      return 0
    fi
    port=$((port + 1))
    [ "$port" -lt 30000 ] || port=10000
  done
  die "no free monitor port near $((10000 + h % 20000))"
}

write_conf ()
{
  local fsid=$1 port=$2
  cat >"$CONF" <<EOF
# Throwaway cluster made by ceph-dev-cluster.sh; removed by its stop.
[global]
fsid = $fsid
mon_host = [v1:127.0.0.1:$port]
mon_initial_members = a
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr2 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
keyring = $DIR/keyring
run_dir = $DIR/run
crash_dir = $DIR/crash
osd_pool_default_size = 3
osd_pool_default_min_size = 2
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_osd_reporter_subtree_level = osd
mon_osd_min_down_reporters = 1
mon_osd_down_out_interval = 0
mon_warn_on_osd_down_out_interval_zero = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_allow_pool_delete = true
mon_cluster_log_to_file = false
mgr_stats_period = 1
mon_mgr_digest_period = 1
mgr_tick_period = 1
paxos_propose_interval = 0.1
osd_heartbeat_interval = 1
osd_heartbeat_grace = 4
mon_osd_adjust_heartbeat_grace = false
osd_recovery_sleep_hdd = 0
# Removed snapshots are trimmed at once (the HDD default sleeps 5 s
# between trims, which tests that wait for clones to go would feel).
osd_snap_trim_sleep = 0
osd_snap_trim_sleep_hdd = 0
osd_snap_trim_sleep_ssd = 0
osd_snap_trim_sleep_hybrid = 0

[mon]
mon_data = $DIR/\$name
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid

[mgr]
mgr_data = $DIR/\$name
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid

[osd]
osd_data = $DIR/\$name
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = 10G
bluestore_fsck_on_mkfs = false
osd_memory_target = 943718400

[client]
admin_socket = $DIR/run/\$name.\$pid.asok
rados_osd_op_timeout = 30
rados_mon_op_timeout = 30
client_mount_timeout = 30
EOF
}

write_keyring ()
{
  local key i
  key=$(ceph-authtool --gen-print-key) || die "ceph-authtool failed"
  (
    umask 077
    {
      printf '[mon.]\n\tkey = %s\n\tcaps mon = "allow *"\n' "$key"
      printf '[client.admin]\n\tkey = %s\n' "$key"
      printf '\tcaps mon = "allow *"\n\tcaps osd = "allow *"\n'
      printf '\tcaps mds = "allow *"\n\tcaps mgr = "allow *"\n'
      printf '[mgr.x]\n\tkey = %s\n\tcaps mon = "allow profile mgr"\n' "$key"
      printf '\tcaps osd = "allow *"\n\tcaps mds = "allow *"\n'
      for i in $(seq 0 $((NUM_OSDS - 1))); do
        printf '[osd.%d]\n\tkey = %s\n\tcaps mon = "allow profile osd"\n' \
          "$i" "$key"
        printf '\tcaps mgr = "allow profile osd"\n\tcaps osd = "allow *"\n'
      done
    } >"$DIR/keyring"
  )
}

# Prints "ready" when every PG is active+clean and the pool's PGs exist,
# else the current summary.
pg_summary ()
{
  local line total clean
  line=$(ceph_cli pg stat 2>/dev/null) || { echo "no answer"; return; }
  total=$(sed -n 's/^\([0-9]*\) pgs: .*/\1/p' <<<"$line")
  clean=$(sed -n 's/^[0-9]* pgs: \([0-9]*\) active+clean;.*/\1/p' <<<"$line")
  if [ -n "$total" ] && [ "$total" -ge "$PG_NUM" ] && [ "$clean" = "$total" ]
  then
    echo ready
  else
    echo "${line%%;*}"
  fi
}

wait_clean ()
{
  local deadline=$1 s
  while :; do
    s=$(pg_summary)
    [ "$s" = ready ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "PGs not active+clean after ${TIMEOUT}s ($s); logs in $DIR/log"
    fi
    sleep 0.5
  done
}

# The last lines a daemon wrote, for a start-up failure's message: CI
# keeps the test's output, not the cluster's directory.
show_log ()
{
  local name=$1 f
  for f in "$DIR/log/$name.out" "$DIR/log/$name.log"; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f:" >&2
    tail -n 15 -- "$f" >&2
  done
}

check_alive ()
{
  local name pid
  while read -r name pid; do
    if ! live_pid "$pid"; then
      show_log "$name"
      die "$name exited during start-up; see $DIR/log/$name.log" \
          "and $DIR/log/$name.out"
    fi
  done <"$DIR/pids"
}

# Waits until the monitor answers, so that the manager and the OSDs
# start against a monitor that has formed its quorum of one.
wait_mon ()
{
  local deadline=$1
  until ceph_cli mon stat >/dev/null 2>&1; do
    check_alive
    [ "$SECONDS" -lt "$deadline" ] ||
      die "monitor does not answer after ${TIMEOUT}s; logs in $DIR/log"
    sleep 0.2
  done
}

do_start ()
{
  local deadline=$((SECONDS + TIMEOUT)) fsid port i uuid mkfs_pids
  if cluster_running; then
    info "cluster in $DIR already runs"
    wait_clean "$deadline"
    echo "$CONF"
    return 0
  fi
  if [ -e "$DIR/pids" ] || [ -e "$CONF" ]; then
    info "removing leftovers of a previous cluster in $DIR"
    kill_daemons
    remove_data
    mkdir -p -- "$DIR"
  fi
  mkdir -p -- "$DIR/run" "$DIR/log" "$DIR/crash" "$DIR/mon.a" "$DIR/mgr.x"
  : >"$DIR/pids"
  # A failed start leaves no daemon behind but keeps the logs to read;
  # the next start or stop removes them.
  trap 'kill_daemons' EXIT

  fsid=$(cat /proc/sys/kernel/random/uuid)
  port=$(pick_port)
  echo "$port" >"$DIR/mon.port"
  write_conf "$fsid" "$port"
  write_keyring

  monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$port]" \
    "$DIR/monmap" >/dev/null || die "monmaptool failed"
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" \
    --keyring "$DIR/keyring" </dev/null >"$DIR/log/mon.a.mkfs" 2>&1 ||
    die "ceph-mon --mkfs failed; see $DIR/log/mon.a.mkfs"
  spawn mon.a ceph-mon -i a
  wait_mon "$deadline"
  spawn mgr.x ceph-mgr -i x

  # Registering the OSDs also proves the monitor answers.
  for i in $(seq 0 $((NUM_OSDS - 1))); do
    uuid=$(cat /proc/sys/kernel/random/uuid)
    echo "$uuid" >"$DIR/run/osd.$i.uuid"
    check_alive
    ceph_cli osd new "$uuid" "$i" >/dev/null 2>"$DIR/log/osd.$i.new" ||
      die "ceph osd new $i failed: $(cat "$DIR/log/osd.$i.new")"
  done
  # mkfs of the three OSDs in parallel: each mostly waits on its disk.
  mkfs_pids=""
  for i in $(seq 0 $((NUM_OSDS - 1))); do
    mkdir -p -- "$DIR/osd.$i"
    ceph-osd -c "$CONF" -i "$i" --mkfs --osd-uuid "$(cat "$DIR/run/osd.$i.uuid")" \
      </dev/null >"$DIR/log/osd.$i.mkfs" 2>&1 9>&- &
    mkfs_pids="$mkfs_pids $!"
  done
  for i in $mkfs_pids; do
    wait "$i" || die "ceph-osd --mkfs failed; see $DIR/log/osd.*.mkfs"
  done
  for i in $(seq 0 $((NUM_OSDS - 1))); do
    spawn "osd.$i" ceph-osd -i "$i"
  done

  ceph_cli osd pool create "$POOL" "$PG_NUM" "$PG_NUM" replicated \
    >/dev/null 2>"$DIR/log/pool.err" ||
    die "pool create failed: $(cat "$DIR/log/pool.err")"
  ceph_cli osd pool application enable "$POOL" rbd >/dev/null 2>&1 ||
    die "pool application enable failed"
  check_alive
  wait_clean "$deadline"
  check_alive
  trap - EXIT
  info "cluster ready in ${SECONDS}s, monitor at 127.0.0.1:$port"
  echo "$CONF"
}

do_stop ()
{
  kill_daemons
  remove_data
}

do_status ()
{
  local h
  if ! cluster_running; then
    echo "$PROG: no running cluster in $DIR" >&2
    return 2
  fi
  echo "conf: $CONF"
  ceph_cli -s || return 1
  h=$(ceph_cli health) || return 1
  [ "${h%% *}" = HEALTH_OK ] || return 1
}

case $cmd in
  start)
    exec 9>>"$DIR/.lock"
    flock -w "$TIMEOUT" 9 || die "another start or stop holds $DIR/.lock"
    # A daemon that dies during start-up (seen once in CI: the manager,
    # within a second) costs every test that needs the cluster, so a
    # failed start is retried once from scratch.  Its reason stays in
    # the output above.
    if ! (do_start); then
      info "start failed; starting once more (this removes its leftovers)"
      do_start
    fi
    ;;
  stop)
    if [ -e "$DIR/.lock" ]; then
      exec 9>>"$DIR/.lock"
      flock -w 60 9 || die "another start or stop holds $DIR/.lock"
    fi
    do_stop
    ;;
  status)
    do_status
    ;;
esac
