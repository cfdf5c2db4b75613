#!/usr/bin/env bash
# A one-node Slurm on this machine, for rsbkit's cluster tests and for trying the cluster path on a
# workstation: munged, MariaDB, slurmdbd, slurmctld and slurmd, started as plain processes (no systemd,
# no cgroups) with every file under one folder.
#
#   bash scripts/slurm-local.sh up [DIR]     install what is missing (Debian's packages, needs root or sudo),
#                                            write the config, start the daemons, wait for the node
#   source DIR/env                           then sbatch, squeue, sacct and `rsbkit sweep --executor slurm` use it
#   bash scripts/slurm-local.sh down [DIR]   cancel every job, stop the daemons by their PID files
#   bash scripts/slurm-local.sh status [DIR]
#
# DIR defaults to .slurm-local (git-ignored). Two nodes on 127.0.0.1 (named after this host and `localhost`,
# half the CPUs and memory each; one node on a 1-CPU machine), two partitions: `debug` (the default) and
# `urgent`, whose jobs preempt debug's (requeued, USR2 first).
#
# Choices, for an HPC reader:
# - slurmdbd with MariaDB, not a stand-in: submitit reads job states with sacct, and without accounting a
#   job that died before writing its result is never seen to end (job.result() waits forever).
# - no cgroups (proctrack/linuxproc, task/none): works in containers and as a plain user; no memory
#   enforcement. DefMemPerCPU lets jobs that give no --mem share the node.
# - cred_expire=5 and sched_interval=1: a requeued job may start again after 6 s, not 121 s, and the
#   scheduler looks every second. KillWait=5, GraceTime=30 on debug: the USR2 at preemption or at the
#   time limit leaves 30 s to save last.pt.
# - GPUs (gres) and several physical nodes are not modelled.
# Slurm 22.05 (Debian 12) is what this was written and tested against.
set -euo pipefail
cmd="${1:-}"
dir="${2:-${RSBKIT_SLURM_DIR:-.slurm-local}}"
case "$cmd" in up|down|status) ;; *) echo "usage: $0 up|down|status [DIR]" >&2; exit 2 ;; esac
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live there, off a plain user's PATH
commands=(munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacctmgr)

say() { echo "slurm-local: $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# RSBKIT_TIME_SCALE: how many times slower this host is than the one these waits were written on (the test suite
# measures it, tests/clock.py); every wait below is multiplied by it
scale=$(awk -v s="${RSBKIT_TIME_SCALE:-1}" 'BEGIN { if (s + 0 < 1) s = 1; print s }')
scaled() { awk -v t="$1" -v s="$scale" 'BEGIN { printf "%d", t * s + 0.5 }'; }
wait_for() {  # seconds, what, command...
  local t; t=$(scaled "$1"); local what="$2"; shift 2
  local deadline=$((SECONDS + t))
  while [ "$SECONDS" -lt "$deadline" ]; do timeout "$(scaled 5)" "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "$what did not come up in $t s; its log: $(ls "$dir"/log/*.log 2>/dev/null | tr '\n' ' ')" >&2
  return 1
}

install() {  # Debian's packages (scripts/system-packages.sh slurm) where a command is missing
  local c
  for c in "${commands[@]}"; do command -v "$c" >/dev/null || { bash "$(dirname "$0")/system-packages.sh" slurm; break; }; done
  for c in "${commands[@]}"; do
    command -v "$c" >/dev/null || { say "$c is not installed: install Slurm 22.05+, munge and MariaDB (see scripts/system-packages.sh)" >&2; exit 1; }
  done
}

free_ports() {  # n free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

write_config() {
  local user host cpus mem ctld slurmd dbd db port2 pass nodes_conf names
  user="$(id -un)"; host="$(hostname -s)"; cpus="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # nproc counts OMP_NUM_THREADS (the suite sets 1)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  read -r ctld slurmd dbd db port2 <<<"$(free_ports 5)"
  # two nodes where there are 2+ CPUs, so `srun --nodes=2` runs here: named after this host and `localhost`,
  # names that resolve (torchrun's --rdzv-endpoint takes the first node's name), each its own slurmd (-N)
  if [ "$cpus" -ge 2 ] && [ "$host" != localhost ]; then
    nodes_conf="NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 Port=$slurmd CPUs=$(( (cpus + 1) / 2 )) RealMemory=$(( mem / 2 )) State=UNKNOWN
NodeName=localhost NodeHostname=$host NodeAddr=127.0.0.1 Port=$port2 CPUs=$(( cpus / 2 )) RealMemory=$(( mem / 2 )) State=UNKNOWN"
    names="$host,localhost"
  else
    nodes_conf="NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 Port=$slurmd CPUs=$cpus RealMemory=$mem State=UNKNOWN"
    names="$host"
  fi

  pass="$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  mkdir -p "$dir"/{etc,run,log,state,db,spool}
  chmod 700 "$dir/etc" "$dir/run"
  echo "${names//,/ }" >"$dir/etc/nodes"
  [ -s "$dir/etc/munge.key" ] || { dd if=/dev/urandom of="$dir/etc/munge.key" bs=1024 count=1 status=none; chmod 600 "$dir/etc/munge.key"; }
  cat >"$dir/etc/slurm.conf" <<EOF
# written by scripts/slurm-local.sh: a one-node Slurm for tests
ClusterName=rsbkit-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld
SlurmdPort=$slurmd
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/run/munge.socket,cred_expire=5
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd
AccountingStoragePass=$dir/run/munge.socket
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( mem / cpus / 2 ))
KillWait=5
MinJobAge=300
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
$nodes_conf
PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE PriorityTier=1 GraceTime=30 State=UP
PartitionName=urgent Nodes=$names MaxTime=INFINITE PriorityTier=10 State=UP
EOF
  cat >"$dir/etc/slurmdbd.conf" <<EOF
# written by scripts/slurm-local.sh
AuthType=auth/munge
AuthInfo=socket=$dir/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd
SlurmUser=$user
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$dir/etc/slurmdbd.conf"
  cat >"$dir/env" <<EOF
# source this file: Slurm's commands then talk to the local cluster in $dir
export SLURM_CONF=$dir/etc/slurm.conf
EOF
  echo "$db" >"$dir/etc/db.port"; echo "$pass" >"$dir/etc/db.pass"; chmod 600 "$dir/etc/db.pass"
}

start_db() {
  local port; port="$(cat "$dir/etc/db.port")"
  if [ ! -d "$dir/db/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$dir/db" --user="$(id -un)" --auth-root-authentication-method=socket \
      --skip-test-db --innodb-log-file-size=8M >"$dir/log/mariadb-install.log" 2>&1
  fi
  mariadbd --no-defaults --datadir="$dir/db" --socket="$dir/run/mysql.sock" --port="$port" --bind-address=127.0.0.1 \
    --pid-file="$dir/run/mariadb.pid" --log-error="$dir/log/mariadb.log" --user="$(id -un)" --skip-name-resolve \
    --innodb-buffer-pool-size=32M --innodb-log-file-size=8M --performance-schema=OFF >/dev/null 2>&1 &
  wait_for 30 MariaDB mariadb --no-defaults --socket="$dir/run/mysql.sock" -u root -e "select 1"
  mariadb --no-defaults --socket="$dir/run/mysql.sock" -u root -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$dir/etc/db.pass")';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$dir/etc/db.pass")';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

up() {
  mkdir -p "$dir/log"
  if alive "$dir/run/slurmctld.pid" && alive "$dir/run/slurmd-$(hostname -s).pid"; then say "already up in $dir (source $dir/env)"; return 0; fi
  down_quiet
  install
  write_config
  export SLURM_CONF="$dir/etc/slurm.conf"
  munged --force --socket="$dir/run/munge.socket" --key-file="$dir/etc/munge.key" --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/run/munge.seed" --num-threads=10
  start_db
  slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
  wait_for 30 slurmdbd sacctmgr -i list cluster
  sacctmgr -i add cluster rsbkit-local >/dev/null 2>&1 || true
  slurmctld -f "$dir/etc/slurm.conf" -i
  wait_for 30 slurmctld scontrol ping
  local node; for node in $(cat "$dir/etc/nodes"); do mkdir -p "$dir/spool/$node"; slurmd -f "$dir/etc/slurm.conf" -N "$node"; done
  wait_for 60 "the nodes" bash -c '[ -n "$(sinfo -h -N -o %t)" ] && [ -z "$(sinfo -h -N -o %t | grep -vx idle)" ]'
  say "up in $dir: $(sinfo -h -N -o '%N (%c CPUs)' | sort -u | tr '\n' ' ')partitions $(sinfo -h -o %P | tr '\n' ' ')"
  say "source $dir/env to use it; bash $0 down $dir stops it"
}

slurmds() {  # the pidfile names of this cluster's slurmd, one per node
  local nodes=(); [ -f "$dir/etc/nodes" ] && read -ra nodes <"$dir/etc/nodes"
  echo "${nodes[@]/#/slurmd-}"
}

stop_daemons() {  # SIGTERM to all at once (each takes 1-3 s to stop; in turn it was 10 s), SIGKILL after 15 s
  local d pids=() names=()
  for d in "$@"; do
    if alive "$dir/run/$d.pid"; then pids+=("$(cat "$dir/run/$d.pid")"); names+=("$d"); kill "${pids[-1]}" 2>/dev/null || true; fi
  done
  for _ in $(seq "$(scaled 150)"); do
    local left=0 p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break; sleep 0.1
  done
  local i; for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null && { say "${names[$i]} (${pids[$i]}) ignored SIGTERM for 15 s: killing it"; kill -9 "${pids[$i]}" 2>/dev/null || true; }
  done
  for d in "$@"; do rm -f "$dir/run/$d.pid"; done
}

down_quiet() {
  [ -d "$dir/run" ] || return 0
  if [ -f "$dir/etc/slurm.conf" ] && alive "$dir/run/slurmctld.pid"; then
    export SLURM_CONF="$dir/etc/slurm.conf"
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq "$(scaled 150)"); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    [ -n "$(squeue -h -o %i 2>/dev/null)" ] && say "jobs still listed after 15 s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
  fi
  # shellcheck disable=SC2046
  stop_daemons $(slurmds) slurmctld slurmdbd mariadb munged
}

status() {
  local d; for d in munged mariadb slurmdbd slurmctld $(slurmds); do
    if alive "$dir/run/$d.pid"; then echo "$d: running ($(cat "$dir/run/$d.pid"))"; else echo "$d: stopped"; fi
  done
  if alive "$dir/run/slurmctld.pid"; then SLURM_CONF="$dir/etc/slurm.conf" sinfo; fi
}

case "$cmd" in
  up) up ;;
  down) down_quiet; say "down ($dir)" ;;
  status) status ;;
esac
