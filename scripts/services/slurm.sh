# A one-node Slurm (munge, slurmctld, slurmd) on this machine, for the `ce` and `job` probe tests.
# Sourced by scripts/test-env.sh (which provides need_pkg, as_root, log and wait_for); run it alone
# with `bash scripts/test-env.sh slurm`. Idempotent and quiet: when everything already runs it only
# checks and prints the export line. There is no systemd here, so the daemons are started directly
# (each daemonizes itself). Prints `export GRIDPROBE_TEST_SLURM=<partition>`.
#
# The configuration is written only when /etc/slurm/slurm.conf is missing or was written by this
# script (it carries the marker below); a hand-written configuration is left alone and its default
# partition is used.

slurm_marker="# written by gridprobe scripts/services/slurm.sh"
slurm_conf=/etc/slurm/slurm.conf
slurm_partition=debug
slurm_host="$(hostname -s)"

need_pkg slurm-wlm munge

# Writes slurm.conf for this host; returns 0 when the file changed.
slurm_write_conf() {
    local node tmp
    # slurmd -C prints this machine's node line (CPUs, sockets, memory). Jobs ask for one CPU
    # each, so the node claims 8 CPUs (config_overrides trusts the configuration): tests running
    # in parallel then run side by side on a 2-core machine instead of queueing.
    node="$(slurmd -C 2>/dev/null | head -n 1 | sed -E 's/ (CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+//g')"
    [ -n "$node" ] || node="NodeName=$slurm_host"
    tmp="$(mktemp)"
    cat >"$tmp" <<EOF
$slurm_marker
# A one-node cluster for tests: no cgroups (they fail in containers), no accounting database.
ClusterName=gridprobe
SlurmctldHost=$slurm_host
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Finished jobs stay visible to scontrol for 5 minutes (there is no sacct without slurmdbd).
MinJobAge=300
# Quick scheduling and short timeouts suit a test cluster.
SchedulerParameters=sched_interval=2
MessageTimeout=10
KillWait=5
$node CPUs=8 State=UNKNOWN
PartitionName=$slurm_partition Nodes=$slurm_host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$slurm_conf" ] && cmp -s "$tmp" "$slurm_conf"; then
        rm -f "$tmp"
        return 1
    fi
    as_root install -m 0644 "$tmp" "$slurm_conf"
    rm -f "$tmp"
    return 0
}

slurm_changed=1
if [ ! -f "$slurm_conf" ] || grep -qF "$slurm_marker" "$slurm_conf"; then
    if slurm_write_conf; then
        log "wrote $slurm_conf"
        slurm_changed=0
    fi
else
    slurm_partition="$(sinfo -h -o '%P' 2>/dev/null | sed -n 's/\*$//p' | head -n 1)"
    slurm_partition="${slurm_partition:-debug}"
fi

as_root install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm

# munge: the key comes with the package; create one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
    log "creating the munge key"
    as_root install -d -o munge -g munge -m 0700 /etc/munge
    as_root mungekey --create --force >/dev/null 2>&1 ||
        as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    as_root chown munge:munge /etc/munge/munge.key
    as_root chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    as_root install -d -o munge -g munge -m 0755 /run/munge
    as_root install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    as_root runuser -u munge -- /usr/sbin/munged
    wait_for 10 sh -c 'munge -n | unmunge' || { log "munged did not start"; return 1 2>/dev/null || exit 1; }
fi

# Whether a daemon from its pid file is alive.
slurm_alive() {
    local pid
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

if ! slurm_alive /run/slurmctld.pid; then
    log "starting slurmctld"
    as_root /usr/sbin/slurmctld
elif [ $slurm_changed -eq 0 ]; then
    log "reconfiguring slurmctld"
    as_root scontrol reconfigure >/dev/null
fi
if ! wait_for 30 scontrol ping; then
    log "slurmctld does not answer; see /var/log/slurm/slurmctld.log"
    return 1 2>/dev/null || exit 1
fi
if ! slurm_alive /run/slurmd.pid; then
    log "starting slurmd"
    as_root /usr/sbin/slurmd
elif [ $slurm_changed -eq 0 ]; then
    as_root kill -HUP "$(cat /run/slurmd.pid)"
fi

# Idle (or busy with jobs) is ready. A node left DOWN or DRAINED by an earlier crash is resumed.
slurm_node_ready() {
    local state
    state="$(sinfo -h -n "$slurm_host" -o '%t' 2>/dev/null | head -n 1)"
    case "$state" in
        idle | mix | alloc) return 0 ;;
        drain* | drng | down*) as_root scontrol update NodeName="$slurm_host" State=RESUME >/dev/null 2>&1 ;;
    esac
    return 1
}
if ! wait_for 60 slurm_node_ready; then
    log "node $slurm_host is not idle: $(sinfo -h -N -o '%N %t %E' 2>&1 | head -n 3)"
    log "see /var/log/slurm/slurmd.log and /var/log/slurm/slurmctld.log"
    return 1 2>/dev/null || exit 1
fi

echo "export GRIDPROBE_TEST_SLURM=$slurm_partition"
