#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + munged) on this Debian machine, for the
# `--executor slurm` tests: `scripts/slurm-local.sh up` installs it if missing (as root),
# writes its config, starts the daemons and waits for the node; `down` stops what `up` started.
# No systemd and no cgroups: proctrack/linuxproc, task/none. Idempotent.
set -euo pipefail
action="${1:-up}"
pids_file=/run/attnlab-slurm.pids
host="$(hostname -s)"

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -f "$1" ] && cat "$1" || true; }

if [ "$action" = down ]; then
  if [ -f "$pids_file" ]; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
    # Stop order: node daemon, controller, munge.
    tac "$pids_file" | while read -r pid; do
      alive "$pid" || continue
      kill "$pid" || true
      # The daemons shut down gracefully; wait (at most 10 s each) so a following `up` starts fresh ones.
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    done
    rm -f "$pids_file"
  fi
  exit 0
fi
[ "$action" = up ] || { echo "usage: $0 up|down" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "slurm-local.sh: run as root (it installs and starts system daemons)" >&2; exit 1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# The node line from what slurmd sees, reachable on localhost.
node="$(slurmd -C | head -n1) NodeAddr=127.0.0.1 State=UNKNOWN"
conf="ClusterName=local
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
DependencyParameters=kill_invalid_depend
${node}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
install -d /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
changed=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
  changed=1
fi

install -d -o munge -g munge -m 0755 /run/munge
if ! alive "$(pid_of /run/munge/munged.pid)"; then
  runuser -u munge -- /usr/sbin/munged
  sleep 0.2
  pid_of /run/munge/munged.pid >> "$pids_file"
fi
if ! alive "$(pid_of /run/slurmctld.pid)"; then
  /usr/sbin/slurmctld
  sleep 0.2
  pid_of /run/slurmctld.pid >> "$pids_file"
elif [ "$changed" = 1 ]; then
  scontrol reconfigure
fi
if ! alive "$(pid_of /run/slurmd.pid)"; then
  /usr/sbin/slurmd
  sleep 0.2
  pid_of /run/slurmd.pid >> "$pids_file"
fi

for _ in $(seq 1 120); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null || true)"
  case "$state" in
    idle|mix|alloc) echo "slurm-local: node $host is $state"; exit 0 ;;
    down*|drain*|drng*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
echo "slurm-local: node $host did not become idle (see /var/log/slurm/)" >&2
exit 1
