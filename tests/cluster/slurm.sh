#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the cluster test (tests/test_cluster.py).
#
#   tests/cluster/slurm.sh up --yes      install (apt), configure and start the cluster; wait
#                                        until its node is idle. Safe to run again.
#   tests/cluster/slurm.sh down          stop the daemons that `up` started, newest first;
#                                        --purge also deletes $RACT_SLURM_DIR
#   tests/cluster/slurm.sh status        what runs, and the node's state
#
# `up` installs system packages (slurmctld slurmd slurm-client munge slurmdbd mariadb-server) and
# starts daemons as root, so it refuses to run without --yes. The cluster lives in one folder,
# $RACT_SLURM_DIR (default /var/tmp/ract-slurm): slurm.conf, slurmdbd.conf, spool, logs and a
# private MariaDB data folder; outside it are only slurmd's link /run/slurm/conf and MUNGE's
# usual folders (and its key, made if the package did not). It never writes /etc/slurm, and refuses to run on a machine that has its own SLURM (a
# /etc/slurm/slurm.conf, or SLURM daemons it did not start), or a running munged, unless
# --reuse-munge (that munged and its key are then used as they are).
#
# The cluster runs "configless": slurmd fetches slurm.conf from slurmctld and keeps a copy in
# /run/slurm/conf, where every SLURM command on this machine looks when SLURM_CONF is unset, so
# sbatch, sacct and the srun that snakemake-executor-plugin-slurm starts inside each job (with
# SLURM_CONF removed from its environment) all find it.
# Accounting (slurmdbd + MariaDB) is not optional: the plugin asks `sacct` for job states
# whenever sacct exists, and without a database sacct knows no jobs.
# Debian 12 / SLURM 22.05; no systemd needed.
set -euo pipefail

DIR=${RACT_SLURM_DIR:-/var/tmp/ract-slurm}
CONF=$DIR/etc/slurm.conf
RUN_CONF=/run/slurm/conf    # slurmd's copy of slurm.conf; clients read it when SLURM_CONF is unset
DB_PORT=${RACT_SLURM_DB_PORT:-3307}    # the private MariaDB, loopback only
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
MARK="# written by ract tests/cluster/slurm.sh"
export SLURM_CONF=$CONF     # for this script's own slurmdbd, sacctmgr and scontrol

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: error: $*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&"$((${1:-0} ? 2 : 1))"
    exit "${1:-0}"
}

pid_of() {  # the pid recorded for a daemon we started, if that daemon still runs under it
    local f=$DIR/pids/$1.pid
    [[ -s $f ]] && [[ $(ps -o comm= -p "$(cat "$f")" 2>/dev/null) == "$1" ]] && cat "$f"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND once a second
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what did not come up within ${limit} s (logs in $DIR/log)"
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$DIR/log/apt.log" 2>&1 \
        || die "apt-get install failed; see $DIR/log/apt.log"
}

refuse_foreign_daemons() {
    local name pid
    for name in slurmctld slurmd slurmdbd; do
        [[ -z $(pid_of "$name" || true) ]] || continue  # ours, running
        for pid in $(pgrep -x "$name" || true); do
            [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]] && continue  # exited, not reaped
            die "a $name (pid $pid) that this script did not start is running; stop it" \
                "first: this script leaves other SLURM set-ups alone"
        done
    done
}

start_munge() {
    if [[ -n $(pid_of munged || true) ]]; then return; fi
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        [[ $REUSE_MUNGE == 1 ]] || die "a munged this script did not start is running; pass" \
            "--reuse-munge to use it (its key then authenticates the test cluster too)"
        say "using the running munged"
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" --force
    wait_for 10 munged bash -c 'munge -n | unmunge'
    cp "$DIR/munge/munged.pid" "$DIR/pids/munged.pid"
}

start_mariadb() {
    local sock=$DIR/mysql-run/mysqld.sock
    if [[ -z $(pid_of mariadbd || true) ]]; then
        if [[ ! -d $DIR/mysql/mysql ]]; then
            say "initialising the accounting database in $DIR/mysql"
            mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$DIR/log/mariadb-install.log" 2>&1 \
                || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
        fi
        # --no-defaults: the machine's /etc/mysql settings (port, data folder) stay out of it
        setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" \
            --socket="$sock" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --pid-file="$DIR/mysql-run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" \
            </dev/null >/dev/null 2>&1 &
        wait_for 60 mariadbd mariadb-admin --no-defaults --socket="$sock" ping
        cp "$DIR/mysql-run/mariadbd.pid" "$DIR/pids/mariadbd.pid"
    fi
    # slurmdbd connects over TCP to 127.0.0.1 with a password made here and kept only in
    # slurmdbd.conf (mode 0600); a running slurmdbd keeps using it, so it is made only once.
    DB_PASS=$(sed -n 's/^StoragePass=//p' "$DIR/etc/slurmdbd.conf" 2>/dev/null || true)
    [[ -n $DB_PASS ]] || DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    mariadb --no-defaults --socket="$sock" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

write_configs() {
    local host node mem
    host=$(hostname -s)
    # The node as slurmd sees it, less its memory: a node that reports less RealMemory than
    # slurm.conf promises is drained, and the kernel's own share varies from boot to boot.
    node=$(slurmd -C | head -1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    node=$(sed -e 's/ RealMemory=[0-9]*//' -e "s/^NodeName=[^ ]*/NodeName=$host/" <<<"$node")
    cat >"$CONF" <<EOF
$MARK; rewritten on every \`up\`
ClusterName=ract-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$DIR/spool/slurmctld
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# configless: slurmd and every client on the node read the copy in /run/slurm/conf
SlurmctldParameters=enable_configless
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoreFlags=job_comment   # sacct -o Comment shows the rule (the plugin's --comment)
$node NodeAddr=127.0.0.1 RealMemory=$((mem * 95 / 100)) State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    (
        umask 077
        cat >"$DIR/etc/slurmdbd.conf" <<EOF
$MARK; rewritten on every \`up\`
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
AuthType=auth/munge
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    )
    chown slurm:slurm "$DIR/etc/slurmdbd.conf"
    chmod 0600 "$DIR/etc/slurmdbd.conf"
}

start_slurm() {
    if [[ -z $(pid_of slurmdbd || true) ]]; then
        slurmdbd
        wait_for 30 slurmdbd test -s "$DIR/run/slurmdbd.pid"
        cp "$DIR/run/slurmdbd.pid" "$DIR/pids/slurmdbd.pid"
        wait_for 30 "slurmdbd (accounting)" sacctmgr -n list cluster
    fi
    sacctmgr -n -P list cluster format=cluster | grep -qx ract-test \
        || sacctmgr -i add cluster ract-test >/dev/null
    if [[ -z $(pid_of slurmctld || true) ]]; then
        slurmctld -f "$CONF"
        wait_for 30 slurmctld test -s "$DIR/run/slurmctld.pid"
        cp "$DIR/run/slurmctld.pid" "$DIR/pids/slurmctld.pid"
        wait_for 30 slurmctld scontrol ping
    else
        scontrol reconfigure  # the configuration was just rewritten
    fi
    if [[ -z $(pid_of slurmd || true) ]]; then
        slurmd --conf-server 127.0.0.1 -N "$(hostname -s)"
        wait_for 30 slurmd test -s "$DIR/run/slurmd.pid"
        cp "$DIR/run/slurmd.pid" "$DIR/pids/slurmd.pid"
    fi
    # A node drained by an earlier run (or reporting a state SLURM distrusts) goes back in service.
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    wait_for 60 "an idle node" bash -c 'sinfo -h -N -o %T | grep -qx idle'
}

up() {
    [[ $YES == 1 ]] || die "up installs system packages and starts daemons as root;" \
        "pass --yes to confirm (see the top of $0)"
    [[ $EUID == 0 ]] || die "up must run as root"
    [[ ! -e $CONF ]] || grep -q "^$MARK" "$CONF" \
        || die "$CONF was not written by this script; choose another RACT_SLURM_DIR"
    [[ ! -e /etc/slurm/slurm.conf ]] || die "this machine has its own SLURM configuration" \
        "(/etc/slurm/slurm.conf), which SLURM commands would read instead of the test cluster's;" \
        "leaving it alone (run the cluster test against that cluster instead, see README)"
    [[ ! -e $RUN_CONF ]] || [[ $(readlink "$RUN_CONF") == "$DIR"/* ]] \
        || die "$RUN_CONF belongs to another slurmd; leaving it alone"
    install -d -m 0755 "$DIR" "$DIR/etc" "$DIR/log" "$DIR/pids" "$DIR/run"
    install_packages
    refuse_foreign_daemons
    install -d -o slurm -g slurm -m 0755 "$DIR/spool" "$DIR/spool/slurmctld" "$DIR/spool/slurmd"
    chown slurm:slurm "$DIR/log" "$DIR/run"
    install -d -o munge -g munge -m 0755 "$DIR/munge"
    install -d -o mysql -g mysql -m 0755 "$DIR/mysql" "$DIR/mysql-run"
    start_munge
    start_mariadb
    write_configs
    start_slurm
    say "up: $(sinfo -h -N -o '%N %T, %c CPUs, %m MB')"
}

down() {
    local name pid i
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        pid=$(pid_of "$name" || true)
        if [[ -n $pid ]]; then
            kill "$pid"
            for ((i = 0; i < 30; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 1
            done
            kill -0 "$pid" 2>/dev/null && { say "$name did not stop; killing it"; kill -9 "$pid"; }
            say "stopped $name (pid $pid)"
        fi
        rm -f "$DIR/pids/$name.pid"
    done
    if [[ $(readlink "$RUN_CONF" 2>/dev/null) == "$DIR"/* ]]; then
        rm -f "$RUN_CONF"
        rmdir --ignore-fail-on-non-empty "$(dirname "$RUN_CONF")"
    fi
    if [[ $PURGE == 1 && -d $DIR ]]; then
        grep -q "^$MARK" "$CONF" 2>/dev/null || die "$DIR holds no cluster of this script's;" \
            "not deleting it"
        rm -rf "$DIR"
        say "deleted $DIR"
    fi
}

status() {
    local name pid
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        pid=$(pid_of "$name" || true)
        if [[ -n $pid ]]; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running (or not started by this script)"
        fi
    done
    [[ -n $(pid_of slurmctld || true) ]] && sinfo -N -o '%N %T %c %m' || true
}

YES=0
REUSE_MUNGE=0
PURGE=0
command=${1:-}
shift || true
for arg in "$@"; do
    case $arg in
        --yes) YES=1 ;;
        --reuse-munge) REUSE_MUNGE=1 ;;
        --purge) PURGE=1 ;;
        *) usage 2 ;;
    esac
done
case $command in
    up) up ;;
    down) down ;;
    status) status ;;
    -h | --help | help) usage ;;
    *) usage 2 ;;
esac
