#!/usr/bin/env bash
# A real, single-node SLURM cluster on this machine (munged + slurmctld + slurmd), for the `slurm` test tier.
#
#   bash launch/slurm_local_cluster.sh start    # as root; installs slurm + munge with apt if missing
#   bash launch/slurm_local_cluster.sh status
#   bash launch/slurm_local_cluster.sh stop     # stops only the daemons this script started (by PID)
#
# One node (this host: its CPUs and memory), one partition `debug` (default, no time limit),
# no accounting, no cgroups (proctrack/linuxproc, task/none: works inside containers), requeue on.
# State lives under $SLURM_LOCAL_STATE (default /var/spool/cft-slurm); config in /etc/slurm.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/spool/cft-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
PIDS=$STATE/pids
HOST=$(hostname -s)
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

log() { echo "[slurm_local_cluster] $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then log "must run as root (daemons, /etc/slurm, apt)"; exit 1; fi
}

install_packages() {
  local missing=()
  for bin in slurmctld slurmd sinfo munged; do
    command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("$bin")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing slurm + munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d is honoured by invoke-rc.d: the packages must not start their own daemons.
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
  local cpus mem_mb
  cpus=$(nproc)
  # Leave ~1 GiB to the OS; slurmd refuses to register a node claiming more memory than it has.
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 - 1024}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,slurmd,log} "$PIDS"
  cat >"$CONF.tmp" <<EOF
# Written by launch/slurm_local_cluster.sh: a one-node cluster on $HOST for the slurm test tier.
ClusterName=cft-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MinJobAge=600
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
  # slurmd 22.05 always loads a cgroup plugin (there is no "disabled" before 23.x); the v1 plugin
  # loads without any cgroup mounts, and proctrack/linuxproc + task/none never use it.
  [ -f "$CONF_DIR/cgroup.conf" ] || echo "CgroupPlugin=cgroup/v1" >"$CONF_DIR/cgroup.conf"
}

alive() {  # alive NAME: the daemon this script recorded is running
  local f=$PIDS/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start_munge() {
  if alive munged; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key --force
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  fi
  chown munge:munge /etc/munge /etc/munge/munge.key
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  local pidfile=/run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged --pid-file="$pidfile" --force
  for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
  cp "$pidfile" "$PIDS/munged.pid"
  munge -n | unmunge >/dev/null || { log "munge does not work (see /var/log/munge/munged.log)"; exit 1; }
}

start_daemon() {  # start_daemon NAME: slurmctld | slurmd (they daemonize and write their pid file)
  local name=$1
  if alive "$name"; then return 0; fi
  rm -f "$PIDS/$name.pid"
  "/usr/sbin/$name" -f "$CONF" || { log "$name failed:"; tail -20 "$STATE/log/$name.log" >&2; exit 1; }
  for _ in $(seq 100); do [ -s "$PIDS/$name.pid" ] && return 0; sleep 0.1; done
  log "$name did not start; last lines of its log:"; tail -20 "$STATE/log/$name.log" >&2 || true
  exit 1
}

wait_idle() {
  local t0=$SECONDS state
  while [ $((SECONDS - t0)) -lt "$WAIT_S" ]; do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
      idle|mixed|allocated) log "node $HOST is $state after $((SECONDS - t0))s"; return 0 ;;
      down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  log "node $HOST not idle after ${WAIT_S}s (state: ${state:-none}); see $STATE/log/"
  sinfo >&2 || true
  exit 1
}

stop_one() {  # stop_one NAME: TERM the recorded PID, then KILL if it lingers
  local f=$PIDS/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$f"
}

case "${1:-}" in
  start)
    need_root
    install_packages
    if alive slurmctld && alive slurmd && alive munged && sinfo -h >/dev/null 2>&1; then
      log "already running"; sinfo; exit 0
    fi
    write_conf
    start_munge
    start_daemon slurmctld
    start_daemon slurmd
    wait_idle
    sinfo
    ;;
  stop)
    stop_one slurmd
    stop_one slurmctld
    stop_one munged
    ;;
  status)
    for d in munged slurmctld slurmd; do
      if alive "$d"; then echo "$d: running (pid $(cat "$PIDS/$d.pid"))"; else echo "$d: not running"; fi
    done
    sinfo 2>/dev/null && squeue 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
