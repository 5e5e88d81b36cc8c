#!/usr/bin/env bash
# A real cluster run on this machine: a single-node SLURM on localhost (Debian's slurm-wlm and munge),
# the crop of a small cohort from examples/data as a SLURM array (one part per task), the part reports
# merged with nnUNetv2_ctarr_report, and the check that the merged result equals a single-process run.
#
#   sudo scripts/slurm_cohort.sh [--venv .venv] [--work /tmp/ctarr_slurm_cohort] [--parts 4] [--timeout 1800]
#
# SLURM: when /etc/slurm/slurm.conf exists and was not written by this script, the cluster it names is
# used as it is (nothing installed or started). Otherwise (as root): apt-get installs slurm-wlm and munge
# when slurmctld is missing, this script writes /etc/slurm/slurm.conf (one node named after `hostname -s`,
# 2 CPUs, partition ctarr, no accounting) and starts munged, slurmctld and slurmd where they are not
# running (by their pid files). Run it again at will: it starts only what is down.
# The run: WORK/cohort + WORK/maps (8 cases), `sbatch --array=0-(N-1)` of nnUNetv2_ctarr_crop -num_parts N
# -part_id $SLURM_ARRAY_TASK_ID --continue into WORK/out, wait (squeue, then sacct or scontrol for the
# tasks' exit codes), nnUNetv2_ctarr_report -i WORK/out, the same crop in one process into WORK/single,
# and scripts/slurm_cohort_check.py compare. Exit code 0 only when all of it holds.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
WORK=/tmp/ctarr_slurm_cohort
PARTS=4
TIMEOUT=1800
REGIONS=all
MARK="# written by nnunet-ctarr scripts/slurm_cohort.sh"
CONF=/etc/slurm/slurm.conf

die() { echo "error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --venv) VENV=$(realpath -m "$2"); shift 2 ;;
    --work) WORK=$(realpath -m "$2"); shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -x "$VENV/bin/nnUNetv2_ctarr_crop" ] && [ -x "$VENV/bin/nnUNetv2_ctarr_report" ] \
  || die "no nnUNetv2_ctarr_crop / nnUNetv2_ctarr_report in $VENV/bin (give --venv)"
[ "$PARTS" -ge 1 ] 2>/dev/null || die "--parts must be a number >= 1"
NODE=$(hostname -s)
STARTED=""

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what did not come up within ${t}s (logs in /var/log/slurm/, /var/log/munge/)"
}

node_ready() { sinfo -h -n "$NODE" -o %T | grep -qE '^(idle|mixed|allocated)'; }

write_conf() {
  cat <<EOF
$MARK: a single-node SLURM on localhost
ClusterName=ctarr
SlurmctldHost=$NODE
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
NodeName=$NODE CPUs=2 State=UNKNOWN
PartitionName=ctarr Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

setup_slurm() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "slurm: using the cluster of $CONF (not written by this script)"
    sinfo -h >/dev/null || die "sinfo cannot reach the controller of $CONF"
    return
  fi
  [ "$(id -u)" = 0 ] || die "setting up SLURM needs root (or an existing cluster in $CONF)"
  if ! command -v slurmctld >/dev/null; then
    echo "slurm: installing slurm-wlm and munge"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
  fi
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key
                                   chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
  mkdir -p /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
  chown munge:munge /run/munge
  running /run/munge/munged.pid || { runuser -u munge -- munged; STARTED+=" munged"; }
  wait_for 20 munged sh -c 'munge -n | unmunge'
  local changed=0
  if ! write_conf | cmp -s - "$CONF"; then write_conf > "$CONF"; changed=1; fi
  if running /run/slurmctld.pid; then
    [ $changed = 0 ] || scontrol reconfigure
  else
    slurmctld; STARTED+=" slurmctld"
  fi
  wait_for 30 slurmctld sh -c 'scontrol ping | grep -q UP'
  running /run/slurmd.pid || { slurmd; STARTED+=" slurmd"; }
  for _ in $(seq 30); do   # a node left down or drained by an earlier run is resumed
    node_ready && break
    sinfo -h -n "$NODE" -o %T | grep -qE '^(down|drain)' && scontrol update nodename="$NODE" state=resume
    sleep 1
  done
  node_ready || die "node $NODE is $(sinfo -h -n "$NODE" -o %T) (see /var/log/slurm/slurmd.log)"
  echo "slurm: started:${STARTED:- nothing (all running)}; conf $CONF $([ $changed = 1 ] && echo written || echo unchanged)"
  echo "slurm: $(sinfo -V), node $NODE $(sinfo -h -n "$NODE" -o '%T, %c CPUs'), partition $(sinfo -h -o %P | head -1)"
}

task_states() {  # k=STATE:EXIT for every task of array job $1 (sacct when accounting is on, else scontrol)
  local out
  if out=$(sacct -n -P -X -j "$1" -o JobID,State,ExitCode 2>/dev/null) && [ -n "$out" ]; then
    echo "$out" | sed -nE 's/^[0-9]+_([0-9]+)\|([A-Z_]+)[^|]*\|([0-9]+):[0-9]+$/\1=\2:\3/p'
  else
    scontrol show job "$1" -o | sed -nE 's/.*ArrayTaskId=([0-9]+) .*JobState=([A-Z_]+) .*ExitCode=([0-9]+):[0-9]+.*/\1=\2:\3/p'
  fi
}

setup_slurm
PY=$VENV/bin/python
mkdir -p "$WORK"
cd "$WORK"
rm -rf out single logs && mkdir logs
"$PY" "$REPO/scripts/slurm_cohort_check.py" cohort "$WORK"

cat > crop_array.sbatch <<EOF
#!/bin/bash
# one part of the cohort per array task (written by scripts/slurm_cohort.sh)
export OMP_NUM_THREADS=\${SLURM_CPUS_PER_TASK:-1}
exec "$VENV/bin/nnUNetv2_ctarr_crop" -i cohort/ -anatomy_seg maps/ -r $REGIONS -o out \\
    -num_parts \$SLURM_ARRAY_TASK_COUNT -part_id \$SLURM_ARRAY_TASK_ID --continue
EOF
t0=$(date +%s)
JOB=$(sbatch --parsable --array=0-$((PARTS - 1)) --job-name=ctarr_crop --cpus-per-task=1 \
      --output="$WORK/logs/part_%a.out" crop_array.sbatch)
JOB=${JOB%%;*}
echo "submitted array job $JOB: $PARTS part(s) of nnUNetv2_ctarr_crop -r $REGIONS"
last=""
while :; do
  left=$(squeue -h -j "$JOB" -o %T 2>/dev/null | sort | uniq -c | tr -s ' ' | paste -sd, -)
  [ -z "$left" ] && break
  [ "$left" != "$last" ] && echo "  $(date +%T) tasks:$left" && last=$left
  if [ $(($(date +%s) - t0)) -gt "$TIMEOUT" ]; then scancel "$JOB"; die "array job $JOB not done after ${TIMEOUT}s; cancelled"; fi
  sleep 3
done
t_array=$(($(date +%s) - t0))
TASKS=$(task_states "$JOB" | sort -n | paste -sd' ' -)
echo "array job $JOB done in ${t_array}s: $TASKS"

echo "--- nnUNetv2_ctarr_report -i out -inputs cohort/"
set +e
"$VENV/bin/nnUNetv2_ctarr_report" -i out -inputs cohort/; rc_merge=$?
echo "--- the same crop in one process -> single/"
t0=$(date +%s)
"$VENV/bin/nnUNetv2_ctarr_crop" -i cohort/ -anatomy_seg maps/ -r $REGIONS -o single 2>logs/single.err; rc_single=$?
t_single=$(($(date +%s) - t0))
echo "--- compare (array ${t_array}s, single process ${t_single}s)"
# shellcheck disable=SC2086
"$PY" "$REPO/scripts/slurm_cohort_check.py" compare "$WORK" "$PARTS" $TASKS; rc_cmp=$?
set -e
[ "$rc_merge" = "$rc_single" ] || { echo "MISMATCH: exit code of the merge $rc_merge, of the single run $rc_single"; rc_cmp=1; }
if [ "$rc_cmp" = 0 ]; then
  echo "OK: the merged report of $PARTS SLURM array task(s) equals the single-process run (exit codes $rc_merge = $rc_single)"
else
  echo "FAILED: see the MISMATCH lines above; logs in $WORK/logs"
fi
exit "$rc_cmp"
