"""A real one-node Slurm for the tests: munged, slurmctld and slurmd started in a temporary folder, then stopped.

Nothing is installed here: `make test` installs Debian's `slurm-wlm` and `munge` when it runs as root (like Chromium
for the browser test). `SlurmCluster.start(folder)` writes a munge key and a `slurm.conf` whose one node is this
host (`ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`, `SelectType=select/cons_tres`), on free ports,
and starts the three daemons under `nice -n 19` (jobs inherit it: tests never slow the machine's other work).
Clients find it through `SLURM_CONF`. `missing()` says why it cannot start (the reason a test is skipped for).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "scancel")


def missing() -> str | None:
    """Why a test Slurm cannot start here, or None."""
    absent = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None]
    if absent:
        return (f"Slurm is not installed ({', '.join(absent)} missing): `apt-get install slurm-wlm munge` "
                "(`make test` does it when run as root)")
    if os.geteuid() != 0:
        return "the tests' one-node Slurm runs its daemons as root (slurmd starts jobs for any user)"
    return None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SlurmCluster:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.host = socket.gethostname()
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ set-up
    def _write(self) -> None:
        f = self.folder
        for d in ("munge", "state", "spool", "log"):
            (f / d).mkdir(mode=0o700, parents=True, exist_ok=True)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        ctld, slurmd = _free_ports(2)
        self.conf.write_text(f"""\
ClusterName=colamtest
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={f}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
MinJobAge=600
NodeName={self.host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")

    def start(self) -> "SlurmCluster":
        self._write()
        f = self.folder
        nice = ["nice", "-n", "19"]
        m = f / "munge"
        self._run(nice + ["munged", "--force", f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
                          f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
        self._run(nice + ["slurmctld", "-f", str(self.conf)])
        self._run(nice + ["slurmd", "-f", str(self.conf)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the test Slurm did not come up:\n{self.logs()}")

    def _run(self, cmd: list[str]) -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for p in sorted(self.folder.glob("log/*.log")) + sorted(self.folder.glob("munge/*.log")):
            parts.append(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(parts)

    # ------------------------------------------------------------------ use
    def scontrol(self, *args: str) -> str:
        return subprocess.run(["scontrol", *args], capture_output=True, text=True, env=self.env, check=True).stdout

    def job_field(self, job: str, field: str) -> str | None:
        """A field of `scontrol show job` (e.g. JobState, Restarts), or None when the job is gone."""
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=self.env)
        for tok in out.stdout.split():
            k, _, v = tok.partition("=")
            if k == field:
                return v
        return None

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.env)
        for pidfile in (self.folder / "slurmd.pid", self.folder / "slurmctld.pid", self.folder / "munge" / "munged.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
