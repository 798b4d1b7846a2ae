"""A real one-node SLURM cluster for tests: munged, slurmctld and slurmd started by hand in a temp
folder (no systemd), stopped by their pids. Needs root and Debian's slurmctld, slurmd,
slurm-client and munge packages (`.ci/run` installs them); `available()` says why not otherwise.

    with SlurmCluster(tmp_path) as cluster:   # sets SLURM_CONF for this process and its children
        subprocess.run(["sbatch", ...])
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PARTITION = "debug"


def available() -> str | None:
    """None when a cluster can start here, else why not."""
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root"
    missing = [name for name in (*DAEMONS, "sbatch", "squeue", "scancel") if shutil.which(name) is None]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing; apt install slurmctld slurmd " \
               "slurm-client munge)"
    return None


def _conf(folder: Path, host: str, cpus: int) -> str:
    return "\n".join([
        # addresses given, so nothing depends on the host name resolving
        "ClusterName=explorer-test", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={folder}/munge.socket,cred_expire=5",
        "CredType=cred/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        "MpiDefault=none", "ReturnToService=2", "KillWait=10", "MinJobAge=600",
        "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1",
        f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
        f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
        f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
        "SlurmctldPort=16817", "SlurmdPort=16818",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


class SlurmCluster:
    """Start the three daemons; `stop()` (or leaving the `with`) kills exactly those pids."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.procs: list[subprocess.Popen] = []
        self._old_conf = os.environ.get("SLURM_CONF")

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.folder / "slurm.conf")}

    def start(self, timeout: float = 30.0) -> None:
        for sub in ("state", "spool", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        key = self.folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.folder / "slurm.conf").write_text(_conf(self.folder, socket.gethostname().split(".")[0],
                                                      os.cpu_count() or 1))
        os.environ.update(self.env)
        log = open(self.folder / "daemons.log", "ab")  # noqa: SIM115 - the daemons keep it
        self._spawn(["munged", "-F", "--force", "-S", str(self.folder / "munge.socket"),
                     f"--key-file={key}", f"--pid-file={self.folder}/munged.pid",
                     f"--log-file={self.folder}/munged.log", f"--seed-file={self.folder}/munge.seed"], log)
        self._wait(lambda: (self.folder / "munge.socket").exists(), timeout, "munged")
        self._spawn(["slurmctld", "-D", "-i"], log)
        self._spawn(["slurmd", "-D"], log)
        self._wait(self._node_idle, timeout, "an idle node")

    def _spawn(self, command: list[str], log) -> None:
        self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, **self.env}, start_new_session=True))

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.time() > deadline:
                self.stop()
                logs = "".join(path.read_text()[-2000:] for path in self.folder.glob("*.log"))
                raise RuntimeError(f"SLURM test cluster: no {what} ({', '.join(dead) or 'timeout'}):\n{logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Let the jobs end (cancelling what is left), then kill the daemons we started (their
        pids, newest first) and what their jobs left behind (slurmstepd, job scripts, srun: the
        processes that carry our SLURM_CONF)."""
        if self.procs:
            self._drain()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._old_conf

    def _drain(self, timeout: float = 30.0) -> None:
        """Let running and completing jobs end (a step cut off from slurmd hangs forever): pending
        ones are cancelled at once, and whatever still runs after half the time."""
        subprocess.run(["scancel", "--user", "root", "--state", "PENDING"], capture_output=True)
        if not self._jobs_gone(timeout / 2):
            subprocess.run(["scancel", "--user", "root"], capture_output=True)
            self._jobs_gone(timeout / 2)

    def _jobs_gone(self, seconds: float) -> bool:
        deadline = time.time() + seconds
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h", "-o", "%T"], capture_output=True, text=True)
            if out.returncode != 0 or not out.stdout.strip():
                return True
            time.sleep(0.3)
        return False

    def _leftovers(self) -> list[int]:
        marker = f"SLURM_CONF={self.folder / 'slurm.conf'}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                found.append(int(entry.name))
        return found
