"""A real one-node SLURM cluster for the tests: this machine as controller (slurmctld) and node (slurmd).

Like a database for a data layer, the SLURM tests run against the real thing, started here and stopped at the end:
Debian's ``slurm-wlm`` and ``munge`` (.ci/run installs them with apt), daemons started directly (no systemd), their
configuration, state and logs in a temporary folder, and ``SLURM_CONF`` pointing the commands at it. Facts behind
the configuration: ../shared/slurm/NOTES.md.

``python tests/slurm_cluster.py`` starts one by hand and prints the ``export SLURM_CONF=...`` to use it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from waiting import wait_for

DAEMONS = ("slurmctld", "slurmd", "munged")


def why_not_here() -> str | None:
    """Why a cluster cannot start on this machine (the tests skip with it), or None."""
    if os.geteuid() != 0:
        return "starting SLURM's daemons needs root (slurmd runs jobs as their users)"
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One node, one partition ``cpu`` (the default), every CPU and most of the memory of this machine.

    Attributes:
        env: the variables a process needs to use this cluster (``SLURM_CONF``).
        folder: configuration, state, spool and logs.
    """

    def __init__(self, folder: str | os.PathLike | None = None, kill_wait: int = 30):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="lth-slurm-"))
        self.conf = self.folder / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.kill_wait = kill_wait
        self._ctld: subprocess.Popen | None = None
        self._slurmd: subprocess.Popen | None = None
        self._munged_started = False

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        self._start_munge()
        self._write_conf()
        self.start_controller(clear=True)
        self._slurmd = self._spawn("slurmd", ["-D", "-f", str(self.conf)], "slurmd.out")
        self.wait_for(lambda: self.node_state() == "idle", 60, "the node to be idle")
        return self

    def stop(self) -> None:
        for job in self.jobs():  # nothing of the tests keeps running after them
            self.run("scancel", job, check=False)
        for process in (self._slurmd, self._ctld):
            _terminate(process)
        self._slurmd = self._ctld = None
        if self._munged_started:
            subprocess.run(["pkill", "-u", "munge", "munged"], check=False)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start_controller(self, clear: bool = False) -> None:
        args = ["-D", "-f", str(self.conf), *(["-c"] if clear else [])]
        self._ctld = self._spawn("slurmctld", args, "slurmctld.out")
        self.wait_for(lambda: self.run("scontrol", "ping", check=False).returncode == 0, 60, "slurmctld to answer")

    def stop_controller(self) -> None:
        """SIGTERM to slurmctld, as a controller restart begins: jobs keep running, commands fail meanwhile."""
        _terminate(self._ctld)
        self._ctld = None

    # -- queries ---------------------------------------------------------------------------------------------

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
        return done

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip()

    def jobs(self, states: str = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED") -> list[str]:
        out = self.run("squeue", "-h", "-t", states, "-o", "%i", check=False).stdout
        return out.split()

    def job_state(self, job_id: str) -> str:
        return self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False).stdout.strip()

    def wait_for(self, condition, timeout: float, what: str):
        return wait_for(condition, timeout, f"{what} (SLURM's logs: {self.logs()})", every=0.2)

    def logs(self) -> str:
        return ", ".join(str(p) for p in sorted(self.folder.glob("*.log")))

    # -- set-up ----------------------------------------------------------------------------------------------

    def _start_munge(self) -> None:
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return  # a munged already runs (a developer's machine, or an earlier test session)
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        munge = pwd.getpwnam("munge")
        os.chown(run_dir, munge.pw_uid, munge.pw_gid)
        # munged refuses to run as root; it forks into the background itself.
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True)
        self._munged_started = True
        self.wait_for(
            lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0,
            30,
            "munged",
        )

    def _write_conf(self) -> None:
        host = socket.gethostname().split(".")[0]
        found = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
        cpus = int(re.search(r"CPUs=(\d+)", found).group(1))
        memory = int(int(re.search(r"RealMemory=(\d+)", found).group(1)) * 0.8)
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(exist_ok=True)
        f = self.folder
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=lthtest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "SlurmUser=root",
                    "AuthType=auth/munge",
                    # A requeued job waits this long before it may start again (SLURM's default: 120 s).
                    "AuthInfo=cred_expire=10",
                    "CredType=cred/munge",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/backfill",
                    "ReturnToService=2",
                    "MailProg=/bin/true",
                    f"KillWait={self.kill_wait}",
                    "JobCompType=jobcomp/filetxt",
                    f"JobCompLoc={f / 'jobcomp.log'}",
                    f"StateSaveLocation={f / 'state'}",
                    f"SlurmdSpoolDir={f / 'spool'}",
                    f"SlurmctldPidFile={f / 'slurmctld.pid'}",
                    f"SlurmdPidFile={f / 'slurmd.pid'}",
                    f"SlurmctldLogFile={f / 'slurmctld.log'}",
                    f"SlurmdLogFile={f / 'slurmd.log'}",
                    f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
                    f"PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                ]
            )
            + "\n"
        )

    def _spawn(self, daemon: str, args: list[str], out: str) -> subprocess.Popen:
        with open(self.folder / out, "ab") as log:
            return subprocess.Popen(
                [daemon, *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                start_new_session=True,
            )  # fmt: skip


def _terminate(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    reason = why_not_here()
    if reason:
        raise SystemExit(f"cannot start a SLURM cluster here: {reason}")
    cluster = SlurmCluster().start()
    print(f"export SLURM_CONF={cluster.conf}   # Ctrl+C stops the cluster")
    try:
        signal.pause()
    finally:
        cluster.stop()
