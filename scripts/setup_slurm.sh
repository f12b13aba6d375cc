#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for `snakemake --profile slurm` and
# tests/test_slurm.py.  For a fresh Debian (12) machine, run as root; idempotent: a second
# run with the daemons up and the configuration unchanged only checks that the node is up.
#
#   scripts/setup_slurm.sh            install, configure, start; wait for the node
#   SLURM_PARTITION=work scripts/setup_slurm.sh   another name for the (default) partition
#
# What it sets up, and why:
# - munge, slurmctld, slurmd and the client commands (Debian's slurm-wlm packages).
# - No slurmdbd / MariaDB: snakemake-executor-plugin-slurm can query job states with
#   `squeue` instead of `sacct`, which needs only slurmctld; slurm/config.yaml selects squeue
#   when AccountingStorageType is accounting_storage/none, as here.  Finished jobs stay
#   visible to squeue for MinJobAge (600 s, more than the plugin's longest interval between
#   checks, 180 s), and are written to a job completion log as well
#   (JobCompType=jobcomp/filetxt, /var/log/slurm/jobcomp.log).
# - No cgroups (none are usable in most containers): proctrack/linuxproc, task/none.
#   Memory is therefore not enforced; it is only checked against the node's RealMemory.
# - The node's CPUs, sockets, cores and RealMemory are those `slurmd -C` reports, and it is
#   addressed by 127.0.0.1, so no name resolution is needed.
# - The daemons are started directly (no systemd here); their logs are in /var/log/slurm/.
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
CLUSTER="${SLURM_CLUSTER_NAME:-motalign}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
WAIT_S="${SLURM_SETUP_WAIT_S:-120}"

die() { echo "setup_slurm: ERROR: $*" >&2; exit 1; }
say() { echo "setup_slurm: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v apt-get >/dev/null || die "needs a Debian/Ubuntu machine (apt-get not found)"

# --- 1. packages -------------------------------------------------------------------------
PACKAGES=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    # policy-rc.d may forbid starting services here; the daemons are started below.
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/tmp/setup_slurm_apt.log 2>&1 \
        || { tail -20 /tmp/setup_slurm_apt.log >&2; die "apt-get install ${PACKAGES[*]} failed (log: /tmp/setup_slurm_apt.log)"; }
fi
for cmd in munged slurmctld slurmd sbatch squeue sinfo scontrol srun; do
    command -v "$cmd" >/dev/null || die "$cmd not found after installing ${PACKAGES[*]}"
done
id slurm >/dev/null 2>&1 || die "user 'slurm' missing (created by the slurm packages)"
id munge >/dev/null 2>&1 || die "user 'munge' missing (created by the munge package)"

# --- helpers -----------------------------------------------------------------------------
pid_alive() {  # pidfile [name] -> is that process (still) running?
    [ -s "$1" ] || return 1
    local pid; pid="$(cat "$1")"
    kill -0 "$pid" 2>/dev/null || return 1
    [ -z "${2:-}" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
stop_daemon() {  # name pidfile
    if pid_alive "$2" "$1"; then
        local pid; pid="$(cat "$2")"
        say "stopping $1 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { kill -9 "$pid" 2>/dev/null || true; sleep 0.5; }
    fi
    rm -f "$2"
}

# --- 2. munge ----------------------------------------------------------------------------
MUNGE_PID=/run/munge/munged.pid
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge 2>/dev/null || true
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pid_alive "$MUNGE_PID" munged; then
    say "starting munged"
    rm -f "$MUNGE_PID" /run/munge/munge.socket.2*
    runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not work (munge -n | unmunge failed)"

# --- 3. slurm.conf -----------------------------------------------------------------------
HOST="$(hostname -s)"
[ -n "$HOST" ] || die "hostname -s is empty"
# "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
NODE_HW="$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')"
echo "$NODE_HW" | grep -q "CPUs=" || die "slurmd -C did not report the hardware: $NODE_HW"
echo "$NODE_HW" | grep -q "RealMemory=" || die "slurmd -C did not report RealMemory: $NODE_HW"

install -d -m 0755 "$CONF_DIR"
install -d -o slurm -g slurm -m 0755 "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
NEW_CONF="$(mktemp)"
cat >"$NEW_CONF" <<EOF
# Written by scripts/setup_slurm.sh: a single-node cluster, controller and node on $HOST.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No accounting database (no slurmdbd): the executor plugin polls squeue.  Finished jobs
# stay visible to squeue for MinJobAge seconds; each one is also logged to JobCompLoc.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
MinJobAge=600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=120
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 $NODE_HW State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
CHANGED=1
if [ -f "$CONF" ] && cmp -s "$NEW_CONF" "$CONF"; then CHANGED=0; fi
if [ "$CHANGED" = 1 ]; then
    say "writing $CONF"
    install -m 0644 "$NEW_CONF" "$CONF"
fi
rm -f "$NEW_CONF"
# Debian's slurmd/slurmctld read cgroup.conf only for cgroup plugins; none are used.

# --- 4. daemons --------------------------------------------------------------------------
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
if [ "$CHANGED" = 1 ]; then
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
fi
if ! pid_alive "$CTLD_PID" slurmctld; then
    say "starting slurmctld"
    rm -f "$CTLD_PID"
    /usr/sbin/slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q "is UP" \
    || { tail -20 "$LOG_DIR/slurmctld.log" >&2 || true; die "slurmctld does not answer (scontrol ping)"; }
if ! pid_alive "$SLURMD_PID" slurmd; then
    say "starting slurmd"
    rm -f "$SLURMD_PID"
    /usr/sbin/slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
fi

# --- 5. wait for the node --------------------------------------------------------------
say "waiting up to ${WAIT_S}s for node $HOST"
state=""
for _ in $(seq "$WAIT_S"); do
    state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*)  # e.g. left down by an earlier configuration
            scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *)
        scontrol show node "$HOST" >&2 || true
        tail -20 "$LOG_DIR/slurmd.log" >&2 || true
        die "node $HOST is '${state:-unknown}', not idle, after ${WAIT_S}s" ;;
esac

# A real job, end to end (controller -> slurmd -> job step), within a minute.
out="$(timeout 60 srun -N1 -n1 -t 1 --quiet hostname 2>&1)" \
    || die "test job failed (srun hostname): $out"

say "ready: partition '$PARTITION' (default), node $HOST ($state), test job ran on $out"
sinfo
echo "versions: $(sinfo --version), $(munged --version 2>&1 | head -1), $(dpkg-query -W -f='slurmd ${Version}' slurmd)"
