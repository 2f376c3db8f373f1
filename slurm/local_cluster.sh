#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (node localhost, partition debug, all its CPUs), to try the launcher
# presets and the sbatch templates without a cluster; tests/test_slurm.py runs on it too.
#
#   eval "$(slurm/local_cluster.sh start)"   # start it and point this shell at it (SLURM_CONF, PATH)
#   slurm/local_cluster.sh status            # sinfo and squeue, or "not running" (exit code 3)
#   slurm/local_cluster.sh env               # the two export lines again, e.g. for another shell
#   slurm/local_cluster.sh stop              # cancel its jobs and stop its daemons
#
# Debian's slurmctld, slurmd and munge (./setup.sh installs them), run as root (slurmd starts the jobs as their
# users). Everything lives in TSTITCH_SLURM_DIR (default /tmp/tstitch-slurm): its own munge key and socket, free
# ports, state, logs; /etc/slurm, /etc/munge and any running munged are left alone. There is no slurmdbd: jobs
# that ended are recorded in the job completion log (jobcomp/filetxt), and a small `sacct` in
# TSTITCH_SLURM_DIR/bin answers from it (and from squeue for jobs not ended yet) in sacct's format, which is what
# submitit asks when a job left no result.
set -euo pipefail

DIR=${TSTITCH_SLURM_DIR:-/tmp/tstitch-slurm}
export SLURM_CONF="$DIR/slurm.conf"
export PATH="$DIR/bin:$PATH:/usr/sbin:/sbin"
DAEMONS=(munged slurmctld slurmd)

die() { echo "local_cluster.sh: error: $*" >&2; exit 2; }
say() { echo "$*" >&2; }

alive() {  # alive NAME: the daemon this script started is running
    [[ -f "$DIR/pids/$1" ]] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null
}

print_env() {
    echo "export SLURM_CONF=$DIR/slurm.conf"
    echo "export PATH=$DIR/bin:\$PATH"
}

write_sacct() {
    cat > "$DIR/bin/sacct" <<EOF
#!/usr/bin/env python3
"""sacct -o JobID,State,NodeList --parsable2 -j ID ... for the local cluster (no slurmdbd): ended jobs from
slurmctld's job completion log, the others from squeue."""
import re, subprocess, sys
wanted = {a.split("_")[0] for i, a in enumerate(sys.argv[1:]) if sys.argv[i] in ("-j", "--jobs")}
wanted |= {a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--jobs=")}
print("JobID|State|NodeList")
rows = {}
try:
    lines = open("$DIR/jobcomp.txt").read().splitlines()
except FileNotFoundError:
    lines = []
for line in lines:
    f = dict(re.findall(r"(\w+)=(\S*)", line))
    main = f.get("ArrayJobId") or f.get("JobId")
    if main in wanted:
        job = "%s_%s" % (main, f["ArrayTaskId"]) if f.get("ArrayJobId") else main
        rows[job] = (f["JobState"], f["NodeList"])
queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%N"], capture_output=True, text=True).stdout
for line in queue.splitlines():
    job, state, nodes = line.split("|")
    if job.split("_")[0] in wanted:
        rows.setdefault(job, (state, nodes or "None assigned"))
for job, (state, nodes) in rows.items():
    print("%s|%s|%s" % (job, state, nodes))
EOF
    chmod 755 "$DIR/bin/sacct"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_conf() {
    local cpus
    cpus=$(slurmd -C 2>/dev/null | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
    cat > "$DIR/slurm.conf" <<EOF
ClusterName=tstitch-local
SlurmctldHost=localhost
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
# an ended job leaves slurmctld after 4 s (default 300 s), so sbatch --wait returns within seconds instead of polling
# every 32 s; its state stays in jobcomp.txt, which sacct (above) reads
MinJobAge=4
NodeName=localhost CPUs=${cpus:-$(nproc)} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

launch() {  # launch NAME COMMAND...: a daemon in its own session, in the foreground of its own, logged
    setsid "${@:2}" > "$DIR/$1.out" 2>&1 < /dev/null &
    echo $! > "$DIR/pids/$1"
}

logs() {
    for f in "$DIR"/*.out "$DIR"/*.log; do [[ -f "$f" ]] && { echo "--- $f"; tail -n 15 "$f"; }; done >&2
}

start() {
    [[ $(id -u) == 0 ]] || die "the local cluster runs slurmd, which starts jobs as their users, as root: run it as root (sudo -E $0 start)"
    local missing=()
    for exe in munged slurmctld slurmd sbatch srun sinfo squeue scancel python3; do
        command -v "$exe" > /dev/null || missing+=("$exe")
    done
    (( ${#missing[@]} == 0 )) || die "${missing[*]} not installed; ./setup.sh installs Debian's slurmctld slurmd slurm-client munge"
    if alive slurmctld && alive slurmd; then
        say "local SLURM already running in $DIR"
        print_env
        return
    fi
    stop_daemons
    mkdir -p "$DIR"/{munge,state,spool,bin,pids}
    chmod 755 "$DIR/munge"
    if [[ ! -s "$DIR/munge/munge.key" ]]; then  # a key of this cluster alone
        head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
        chmod 600 "$DIR/munge/munge.key"
    fi
    write_sacct
    write_conf
    launch munged munged --foreground --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/socket" \
        --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/seed" --log-file="$DIR/munge/log"
    for _ in $(seq 300); do [[ -S "$DIR/munge/socket" ]] && break; sleep 0.1; done
    launch slurmctld slurmctld -D -c -f "$SLURM_CONF"  # -c: no jobs or nodes left from an earlier start
    launch slurmd slurmd -D -N localhost -f "$SLURM_CONF"
    for _ in $(seq 200); do
        [[ $(sinfo -h -N -o %T 2>/dev/null) == idle ]] && break
        for d in "${DAEMONS[@]}"; do alive "$d" || { logs; stop_daemons; die "$d exited; its log is above"; }; done
        sleep 0.3
    done
    [[ $(sinfo -h -N -o %T 2>/dev/null) == idle ]] || { logs; stop_daemons; die "node localhost not idle after 60 s"; }
    say "local SLURM up: node localhost, partition debug, $(sinfo -h -o %c) CPUs; state and logs in $DIR"
    say "(stop it with: $0 stop)"
    print_env
}

stop_daemons() {
    local d pid
    for d in slurmd slurmctld munged; do
        alive "$d" || continue
        pid=$(cat "$DIR/pids/$d")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$DIR/pids/$d"
    done
}

stop() {
    if alive slurmctld; then
        scancel --partition=debug 2>/dev/null || true
        for _ in $(seq 150); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.2; done
        for _ in $(seq 75); do  # job steps gone: slurmstepd removes its socket from the spool on exit
            [[ -z $(find "$DIR/spool" -type s 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    stop_daemons
    say "local SLURM in $DIR stopped"
}

status() {
    if alive slurmctld && alive slurmd; then
        sinfo
        squeue
    else
        echo "local SLURM in $DIR is not running ($0 start starts it)"
        exit 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) print_env ;;
    *) echo "usage: $0 start|stop|status|env (TSTITCH_SLURM_DIR=$DIR)" >&2; exit 2 ;;
esac
