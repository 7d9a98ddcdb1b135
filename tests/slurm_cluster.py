"""A real two-node SLURM cluster on this machine, for the tests marked `slurm` (`make test-cluster`).

Debian's Slurm 22.05 daemons, started without systemd, with every file in one folder but munge's socket
(clients such as sacctmgr look for it only where munge puts it): munged with its own key; MariaDB and
slurmdbd (submitit reads job states with `sacct`, which needs accounting storage); slurmctld; and two
slurmd daemons on distinct ports, `lightyard-node1` and `lightyard-node2` (names that resolve: Lightning
takes its master address from the first node of the job). Each node declares 8 CPUs whatever the host
has (`config_overrides`, Slurm's way to emulate a larger cluster), so that jobs ask for what they would
on a real one. `down` stops them all and removes what `up` added. `study_database` gives sweeps a
database of their own on the same MariaDB.

    python tests/slurm_cluster.py up [DIR]      # prints the SLURM_CONF to export
    python tests/slurm_cluster.py down [DIR]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server"]
NODES = ("lightyard-node1", "lightyard-node2")
HOSTS = Path("/etc/hosts")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
HOSTS_LINE = f"127.0.0.1 {' '.join(NODES)}  # lightyard test cluster"
DEFAULT_DIR = Path("/tmp/lightyard-slurm")
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", *(f"slurmd-{node}" for node in NODES))


class ClusterError(RuntimeError):
    """Why the cluster cannot run here, in one line (a daemon's own stderr folded into it)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


def install() -> None:
    """The Debian packages, when a daemon is missing (root only)."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sinfo")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterError(
            "Slurm is not installed and this is not root on Debian: apt-get install " + " ".join(PACKAGES)
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(command)} failed: {result.stderr.strip().splitlines()[-1:]}")


def write_configs(folder: Path) -> dict[str, int]:
    ctld, dbd, db, *node_ports = free_ports(3 + len(NODES))
    common = "AuthType=auth/munge\n"
    # a requeued job waits out its credential's life before it starts again: 120 s by default
    credentials = "AuthInfo=cred_expire=10\n"
    nodes = "".join(
        f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs=8 RealMemory=8000\n"
        for node, port in zip(NODES, node_ports, strict=True)
    )
    (folder / "slurm.conf").write_text(
        f"""ClusterName=lightyard
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld}
SlurmUser=root
SlurmdUser=root
{common}{credentials}StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
{nodes}PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
    )
    (folder / "slurmdbd.conf").write_text(
        f"""{common}DbdHost=localhost
DbdPort={dbd}
SlurmUser=root
PidFile={folder}/slurmdbd.pid
LogFile={folder}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""
    )
    (folder / "slurmdbd.conf").chmod(0o600)
    (folder / "cgroup.conf").write_text("CgroupPlugin=autodetect\nIgnoreSystemd=yes\n")
    return {"db": db}


def environment(folder: Path) -> dict[str, str]:
    """What a client (sinfo, sbatch, submitit) needs to reach this cluster."""
    return {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}


def start(folder: Path, name: str, command: list[str]) -> None:
    log = open(folder / f"{name}.out", "ab")  # noqa: SIM115 -- the daemon keeps it
    process = subprocess.Popen(
        command, env=environment(folder), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    (folder / "pids").mkdir(exist_ok=True)
    (folder / "pids" / name).write_text(str(process.pid))


def wait_for(what: str, check, folder: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    logs = sorted(p.name for p in folder.glob("*.log")) + sorted(p.name for p in folder.glob("*.out"))
    raise ClusterError(f"{what} did not come up within {seconds:.0f} s: see {folder} ({', '.join(logs)})")


def run(command: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=environment(folder), capture_output=True, text=True, timeout=60)


def node_states(folder: Path) -> dict[str, str]:
    result = run(["sinfo", "-h", "-N", "-o", "%N %t"], folder)
    return (
        dict(line.split() for line in result.stdout.splitlines() if line.strip())
        if result.returncode == 0
        else {}
    )


def add_hosts_line() -> None:
    """The node names must resolve: Lightning takes MASTER_ADDR from the job's first node name."""
    text = HOSTS.read_text()
    if HOSTS_LINE not in text:
        HOSTS.write_text(text + ("" if text.endswith("\n") else "\n") + HOSTS_LINE + "\n")


def remove_hosts_line() -> None:
    if HOSTS.is_file() and HOSTS_LINE in HOSTS.read_text():
        HOSTS.write_text(
            "".join(line for line in HOSTS.read_text().splitlines(True) if line.strip() != HOSTS_LINE)
        )


def up(folder: Path = DEFAULT_DIR) -> Path:
    """Starts the cluster in `folder` (replacing one left there) and returns its slurm.conf once both
    nodes are idle."""
    if os.geteuid() != 0:
        raise ClusterError(
            "the test cluster runs its daemons as root (munged, slurmctld, slurmd): run as root"
        )
    install()
    down(folder)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        return _start_all(folder)
    except BaseException:  # a daemon that did not come up: stop the ones that did, keep the first error
        with contextlib.suppress(Exception):
            down(folder)
        raise


def _start_all(folder: Path) -> Path:
    for sub in ("state", "db", *(f"spool/{node}" for node in NODES)):
        (folder / sub).mkdir(parents=True)
    ports = write_configs(folder)
    add_hosts_line()

    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    if MUNGE_SOCKET.exists() and run(["munge", "-n"], folder).returncode == 0:
        raise ClusterError(
            f"a munged is already running ({MUNGE_SOCKET}): stop it, or use that machine's cluster"
        )
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    start(folder, "munged", ["munged", "-F", "--force", f"--key-file={key}", f"--socket={MUNGE_SOCKET}",
                             f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                             f"--seed-file={folder}/munge.seed"])  # fmt: skip
    wait_for("munged", lambda: run(["munge", "-n"], folder).returncode == 0, folder)

    install_db = run(["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={folder}/db",
                      "--auth-root-authentication-method=socket", "--skip-test-db"], folder)  # fmt: skip
    if install_db.returncode != 0:
        raise ClusterError(f"mariadb-install-db failed: {install_db.stderr.strip()[-300:]}")
    sock = folder / "mysql.sock"
    start(folder, "mariadbd", ["mariadbd", "--no-defaults", "--user=root", f"--datadir={folder}/db",
                               f"--socket={sock}", f"--port={ports['db']}", "--bind-address=127.0.0.1",
                               f"--pid-file={folder}/mariadb.pid", f"--log-error={folder}/mariadb.log",
                               "--innodb-lock-wait-timeout=900"])  # fmt: skip
    wait_for("MariaDB", sock.exists, folder)
    grant = ("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
             "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")  # fmt: skip
    created = run(["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", grant], folder)
    if created.returncode != 0:
        raise ClusterError(f"could not create the accounting database user: {created.stderr.strip()}")

    start(folder, "slurmdbd", ["slurmdbd", "-D"])
    wait_for("slurmdbd", lambda: run(["sacctmgr", "-n", "list", "cluster"], folder).returncode == 0, folder)
    added = run(["sacctmgr", "-i", "add", "cluster", "lightyard"], folder)
    if added.returncode != 0 and "already exists" not in added.stdout + added.stderr:
        raise ClusterError(f"sacctmgr add cluster failed: {(added.stdout + added.stderr).strip()}")
    start(folder, "slurmctld", ["slurmctld", "-D", "-c"])
    for node in NODES:
        start(folder, f"slurmd-{node}", ["slurmd", "-D", "-N", node])
    wait_for(
        "both nodes idle", lambda: [node_states(folder).get(n) for n in NODES] == ["idle", "idle"], folder
    )
    return folder / "slurm.conf"


def study_database(folder: Path = DEFAULT_DIR) -> str:
    """A database on the cluster's MariaDB for Optuna studies, as the SQLAlchemy URL that sweeps and
    their jobs use (over TCP, as clients on other nodes would)."""
    port = next(
        line.split("=", 1)[1]
        for line in (folder / "slurmdbd.conf").read_text().splitlines()
        if line.startswith("StoragePort=")
    )
    sql = ("CREATE DATABASE IF NOT EXISTS optuna; "
           "CREATE USER IF NOT EXISTS 'optuna'@'127.0.0.1' IDENTIFIED BY 'optuna'; "
           "GRANT ALL ON optuna.* TO 'optuna'@'127.0.0.1';")  # fmt: skip
    created = run(
        ["mariadb", "--no-defaults", f"--socket={folder / 'mysql.sock'}", "-u", "root", "-e", sql], folder
    )
    if created.returncode != 0:
        raise ClusterError(f"could not create the study database: {created.stderr.strip()}")
    return f"mysql+pymysql://optuna:optuna@127.0.0.1:{port}/optuna"


def down(folder: Path = DEFAULT_DIR) -> None:
    """Cancels every job, stops every daemon `up` started (SIGTERM, then SIGKILL), and removes the hosts
    line: nothing keeps running."""
    if (folder / "slurm.conf").is_file() and node_states(folder):
        run(["scancel", "--full", "--user=root"], folder)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and run(["squeue", "-h"], folder).stdout.strip():
            time.sleep(0.5)
    for name in reversed(DAEMONS):
        pid_file = folder / "pids" / name
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid_file.unlink()
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink()
    for pid, _ in left_running(folder):  # job steps (slurmstepd) and their tasks outlive their slurmd
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)
    remove_hosts_line()


PROGRAMS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmstepd")


def left_running(folder: Path) -> list[tuple[int, str]]:
    """(pid, name) of this cluster's processes still running: its daemons, their job steps and the jobs'
    tasks, i.e. processes with this cluster's SLURM_CONF that are one of its programs or run under one
    (a shell that exported SLURM_CONF is neither)."""
    marker = f"SLURM_CONF={folder / 'slurm.conf'}".encode()
    table: dict[int, tuple[int, str, bool]] = {}  # pid → (parent pid, name, has the marker)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _alive(int(entry.name)):
            continue
        try:
            stat = (entry / "stat").read_text()
            marked = marker in (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), name, marked)

    def under_a_program(pid: int) -> bool:
        while pid in table:
            parent, name, _ = table[pid]
            if name in PROGRAMS:
                return True
            pid = parent
        return False

    return [(pid, name) for pid, (_, name, marked) in table.items() if marked and under_a_program(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is gone too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


if __name__ == "__main__":
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    where = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DIR
    try:
        if action == "up":
            print(f"export SLURM_CONF={up(where)}")
        elif action == "down":
            down(where)
            print(f"cluster in {where} stopped")
        else:
            raise SystemExit(__doc__)
    except ClusterError as err:
        raise SystemExit(f"error: {err}") from None
