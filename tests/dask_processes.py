"""A Dask cluster as separately started programs: ``dask scheduler`` and ``dask worker``
processes, each in its own working directory with its own log, as an operator starts them.

Workers run without a nanny, so a killed worker stays dead (the scheduler then reschedules its
tasks on the others)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 60


def _dask() -> str:
    found = Path(sys.executable).with_name("dask")
    return str(found) if found.exists() else (shutil.which("dask") or "dask")


class DaskProcesses:
    """``dask scheduler`` + ``workers`` × ``dask worker --nthreads 1`` on 127.0.0.1."""

    def __init__(self, root: Path, workers: int = 2):
        self.root = Path(root)
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address = ""
        self._start(workers)

    def _popen(self, name: str, *args: str) -> subprocess.Popen:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "log.txt", "wb")  # noqa: SIM115 - closed with the process
        try:
            return subprocess.Popen([_dask(), *args], cwd=folder, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()

    def _start(self, workers: int) -> None:
        scheduler_file = self.root / "scheduler" / "scheduler.json"
        self.scheduler = self._popen("scheduler", "scheduler", "--host", "127.0.0.1",
                                     "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.address:
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start:\n{self.logs()}")
            try:
                self.address = json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        for k in range(workers):
            self.add_worker(f"worker-{k}")
        self.wait_for_workers(workers)

    def add_worker(self, name: str) -> subprocess.Popen:
        worker = self._popen(name, "worker", self.address, "--nthreads", "1", "--no-nanny",
                             "--no-dashboard", "--host", "127.0.0.1", "--name", name)
        self.workers.append(worker)
        return worker

    def worker_count(self) -> int:
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            return len(client.nthreads())

    def wait_for_workers(self, n: int) -> None:
        """Until exactly ``n`` workers are known to the scheduler."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.worker_count() != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected {n} workers:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*/log.txt")))

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
