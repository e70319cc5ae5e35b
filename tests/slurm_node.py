"""A real single-node SLURM cluster on this machine, for the workflow's SLURM test.

Needs Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them) and root: it starts
``munged`` if it is not running, writes ``/etc/slurm/slurm.conf`` (the default location,
the only one job steps find) unless a configuration not written by this module is there,
and starts ``slurmctld`` and ``slurmd`` with their state, spool, log and pid files under a
temporary folder. :func:`stop` ends the daemons it started, by their pid files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by nucseg tests/slurm_node.py"


def unavailable() -> str | None:
    """Why a SLURM node cannot be started here (None: it can)."""
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not installed (Debian packages slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd needs root"
    if CONF.exists() and MARK not in CONF.read_text():
        return f"{CONF} exists and was not written by this test; not touching a real cluster's configuration"
    return None


def _sbin(tool: str) -> str:
    return shutil.which(tool) or f"/usr/sbin/{tool}"


def start(folder: Path, timeout: float = 60) -> dict:
    """Start munged (if needed), slurmctld and slurmd; wait until the node is idle. Returns the pid files."""
    folder = Path(folder)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    cpus = os.cpu_count() or 1
    pids = {"slurmctld": folder / "slurmctld.pid", "slurmd": folder / "slurmd.pid"}
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(f"""{MARK}
ClusterName=nucseg-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={pids["slurmctld"]}
SlurmdPidFile={pids["slurmd"]}
SlurmctldLogFile={folder / "slurmctld.log"}
SlurmdLogFile={folder / "slurmd.log"}
NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        subprocess.run([_sbin("munged"), "--force"], check=True, capture_output=True)
    subprocess.run([_sbin("slurmctld")], check=True, capture_output=True)
    subprocess.run([_sbin("slurmd")], check=True, capture_output=True)
    t0 = time.time()
    while time.time() - t0 < timeout:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() == "idle":
            return pids
        time.sleep(1)
    stop(pids)
    raise RuntimeError(f"the SLURM node did not become idle within {timeout} s; logs in {folder}")


def stop(pids: dict) -> None:
    """End the daemons started by :func:`start` (munged stays: other programs may use it) and remove the config."""
    for name in ("slurmd", "slurmctld"):
        path = Path(pids[name])
        if path.exists():
            try:
                os.kill(int(path.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
    time.sleep(1)
    if CONF.exists() and MARK in CONF.read_text():
        CONF.unlink()


def main(argv=None) -> None:
    """``python -m tests.slurm_node start|stop FOLDER``: what book/reproduce.md documents for trying the
    SLURM profile on one machine (the pid files, state and logs go to FOLDER)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.slurm_node", description=main.__doc__.split("\n")[0])
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("folder", type=Path)
    a = ap.parse_args(argv)
    a.folder = a.folder.resolve()  # slurm.conf needs absolute paths
    why = unavailable() if a.action == "start" else None
    if why:
        raise SystemExit(f"cannot start a SLURM node here: {why}")
    if a.action == "start":
        start(a.folder)
        print(f"SLURM node idle (partition debug); logs and state in {a.folder}")
    else:
        stop({"slurmctld": a.folder / "slurmctld.pid", "slurmd": a.folder / "slurmd.pid"})


if __name__ == "__main__":
    main()
