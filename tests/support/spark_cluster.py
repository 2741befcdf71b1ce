"""A real Spark standalone cluster on 127.0.0.1 for tests and benchmarks: one
master and N workers started with ``spark-class`` from the pyspark wheel
(which ships no ``sbin/start-*.sh``), on free ports, each in its own process
group with its log kept under ``log_dir``; :meth:`StandaloneCluster.stop`
ends every group by its pid (the workers' executor JVMs with them).

Jobs are submitted with ``bin/spark-submit`` the way the pair-mining DAG's
SparkSubmitOperator submits them: the packaged code (``python -m jobs.package``),
``--py-files`` the zip, the entry script as the application."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(log_dir: Path) -> dict:
    """The environment of every cluster process and submit: loopback only, the
    test's interpreter for Python workers, logs and scratch under ``log_dir``."""
    env = dict(os.environ)
    env.update({"SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(log_dir),
                "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                "SPARK_LOCAL_DIRS": str(log_dir / "local")})
    return env


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc: no psutil on the machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class StandaloneCluster:
    def __init__(self, log_dir: Path, workers: int = 2, cores: int = 1, memory: str = "3g"):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.workers, self.cores, self.memory = workers, cores, memory
        self.env = cluster_env(self.log_dir)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.port = self.ui_port = None

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen([str(SPARK_CLASS), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.log_dir, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.state()["workers"] if w["state"] == "ALIVE")
        except (OSError, ValueError, KeyError):   # not listening yet, or an empty page while the UI starts
            return 0

    def start(self, timeout: float = 120) -> "StandaloneCluster":
        self.port, self.ui_port = free_port(), free_port()
        self._spawn("master", [MASTER_CLASS, "--host", "127.0.0.1", "--port", str(self.port),
                               "--webui-port", str(self.ui_port)])
        for i in range(self.workers):
            work = self.log_dir / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self._spawn(f"worker-{i}", [WORKER_CLASS, "--host", "127.0.0.1", "--port", str(free_port()),
                                        "--webui-port", str(free_port()), "--cores", str(self.cores),
                                        "--memory", self.memory, "--work-dir", str(work), self.master_url])
        deadline = time.monotonic() + timeout
        while self.alive_workers() < self.workers:
            dead = [n for n, p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                why = "exited: " + ", ".join(dead) if dead else "timeout"
                raise RuntimeError(f"standalone cluster did not come up ({why}); logs in {self.log_dir}")
            time.sleep(0.5)
        return self

    def executor_pids(self) -> list[int]:
        """The executor JVMs the workers launched (children of the worker processes)."""
        pids = []
        for name, proc in self.procs:
            if name.startswith("worker"):
                stack = [proc.pid]
                while stack:
                    pid = stack.pop()
                    for child in _children(pid):
                        if EXECUTOR_CLASS in _cmdline(child):
                            pids.append(child)
                        else:
                            stack.append(child)
        return pids

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def submit_command(self, package: dict, job: str, args: list[str], conf: dict | None = None) -> list[str]:
        """spark-submit of a packaged job, as SparkSubmitOperator builds it."""
        cmd = [str(SPARK_SUBMIT), "--master", self.master_url, "--py-files", package["py_files"],
               "--name", f"notellm-{job}-test"]
        for key, value in {"spark.ui.enabled": "false", "spark.executor.memory": "1g",
                           "spark.driver.memory": "1g", **(conf or {})}.items():
            cmd += ["--conf", f"{key}={value}"]
        return cmd + [package[job], *args]

    def submit(self, package: dict, job: str, args: list[str], conf: dict | None = None, cwd: Path | None = None,
               timeout: float = 600) -> dict:
        """Run a packaged job to completion; return its JSON result line (stderr kept on failure)."""
        cmd = self.submit_command(package, job, args, conf)
        proc = subprocess.run(cmd, env=self.env, cwd=cwd or self.log_dir, capture_output=True, text=True,
                              timeout=timeout)
        (self.log_dir / f"submit-{job}.stderr").write_text(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"spark-submit {job} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
