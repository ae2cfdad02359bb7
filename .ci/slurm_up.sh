#!/usr/bin/env bash
# Start a real one-node slurm cluster on this machine (root; Debian packages)
# for the slurm tests (tests/test_distributed.py, tests/test_mmpretrain_tools.py).
# Idempotent: installs slurmctld/slurmd/munge if missing, writes a one-node
# config with all CPUs in partition "debug", starts munged, slurmctld and
# slurmd, and waits until `srun -n2` runs.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "slurm_up: needs root to install and start the daemons" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm_up: installing slurm and munge (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    slurmctld slurmd slurm-client munge >/dev/null
fi
host=$(hostname -s)
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm \
  /run/munge /var/lib/munge /var/log/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=kdci
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
GresTypes=gpu
NodeName=$host CPUs=$cpus Gres=gpu:$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# stand-in "gpu" resources, one per CPU: mmpretrain's own slurm_train.sh
# always asks srun for --gres=gpu:N, and slurm counts a gpu only with a device
# file (a count alone registers 0: "gres/gpu count reported lower than
# configured"). The files are copies of /dev/null (char 1:3); the ranks find
# no CUDA device and train with gloo on the CPU (kd_plugins.compat).
for i in $(seq 0 $((cpus - 1))); do
  [ -e /dev/kdfakegpu$i ] || mknod /dev/kdfakegpu$i c 1 3
done
cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=/dev/kdfakegpu[0-$((cpus - 1))]
CONF
if [ ! -f /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
pgrep -u munge munged >/dev/null || su -s /bin/sh munge -c munged
# (re)start the daemons on this config (a package install may have started
# them on its own default one)
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
sleep 1
slurmctld
slurmd
for _ in $(seq 1 30); do
  sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc" && break
  sleep 1
done
scontrol update nodename="$host" state=resume 2>/dev/null || true
timeout 60 srun -N1 -n2 hostname
echo "slurm_up: one-node cluster up ($cpus CPUs, partition debug)"
