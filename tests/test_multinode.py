"""A real multi-node Ray cluster on this machine: a head and a worker node as separate
``ray start`` processes (loopback, own temp dirs and ports, one CPU each); ``raysteal run`` and
``raysteal tune`` join it with ``--address`` and their work lands on both nodes.

The cluster is separate from the session's in-process Ray (``ray_session``), which this test
neither uses nor touches: the commands run in subprocesses. Teardown kills exactly the process
groups this test started (never a machine-wide ``ray stop``, which would also stop other Ray
clusters on the machine), even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

RAY = Path(sys.executable).parent / "ray"
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_AIR_NEW_OUTPUT": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LoopbackCluster:
    """A head and ``workers`` worker nodes, each a ``ray start --block`` in its own process group."""

    def __init__(self, workers: int = 1, object_store_mb: int = 100):
        # short root: Ray's socket paths (ROOT/session_*/sockets/plasma_store) must stay < 108 chars
        self.root = Path(tempfile.mkdtemp(prefix=f"rmn-{uuid.uuid4().hex[:4]}-", dir="/tmp"))
        self.workers, self.object_store = workers, object_store_mb * 2**20
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _node(self, name: str, head: bool) -> subprocess.Popen:
        ports = _free_ports(6)
        cmd = [str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0"]
        cmd += ["--temp-dir", str(self.root / name), "--object-store-memory", str(self.object_store), "--disable-usage-stats"]
        cmd += [
            "--node-manager-port",
            str(ports[0]),
            "--object-manager-port",
            str(ports[1]),
            "--dashboard-agent-listen-port",
            str(ports[2]),
        ]
        cmd += [
            "--dashboard-agent-grpc-port",
            str(ports[3]),
            "--runtime-env-agent-port",
            str(ports[4]),
            "--metrics-export-port",
            str(ports[5]),
        ]
        if head:
            cmd += ["--head", "--port", self.address.rsplit(":", 1)[1], "--include-dashboard", "false"]
        else:
            cmd += ["--address", self.address]
        log = open(self.root / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait_started(self, name: str, deadline: float) -> None:
        """Until ``ray start`` says its node runs (it then blocks)."""
        log = self.root / f"{name}.log"
        while "will now block" not in log.read_text(errors="replace"):
            assert all(p.poll() is None for p in self.procs), self.logs()
            assert time.monotonic() < deadline, f"node {name} did not start\n{self.logs()}"
            time.sleep(0.2)

    def start(self, timeout: float = 120.0) -> list[str]:
        """Start every node; returns the alive nodes' ids once all have joined."""
        deadline = time.monotonic() + timeout
        self.address = f"127.0.0.1:{_free_ports(1)[0]}"
        self._node("head", head=True)
        self._wait_started("head", deadline)
        for i in range(self.workers):
            self._node(f"w{i}", head=False)
            self._wait_started(f"w{i}", deadline)
        probe = (
            "import ray, sys, time\n"
            f"ray.init(address='{self.address}', log_to_driver=False)\n"
            f"deadline = time.time() + {timeout}\n"
            f"while len([n for n in ray.nodes() if n['Alive']]) < {self.workers + 1} and time.time() < deadline:\n"
            "    time.sleep(0.5)\n"
            "print(' '.join(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))\n"
        )
        done = subprocess.run([sys.executable, "-c", probe], env=ENV, capture_output=True, text=True, timeout=timeout + 30)
        assert done.returncode == 0, f"cannot reach the cluster: {done.stderr[-2000:]}\n{self.logs()}"
        nodes = done.stdout.split()
        assert len(nodes) == self.workers + 1, f"only {nodes} joined\n{self.logs()}"
        return nodes

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.root.glob("*.log")))

    def stop(self) -> None:
        """SIGTERM every process of each node's session (worker nodes first), SIGKILL what is
        left after a grace period, then remove the temp dirs. Each ``ray start`` was started in a
        new session, so its session holds exactly the processes of that node (raylet, GCS,
        agents and the Ray workers, which get their own process groups but stay in the session)."""
        for proc in reversed(self.procs):  # worker nodes first, the head (GCS) last
            _signal_session(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
        for proc in self.procs:
            _signal_session(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
            pids.append(int(stat.parent.name))
    return pids


def _signal_session(sid: int, sig: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@pytest.fixture
def cluster():
    if not RAY.is_file():
        pytest.skip("the ray command line is not installed beside this Python")
    c = LoopbackCluster(workers=1)
    try:
        nodes = c.start()
        yield c, nodes
    finally:
        c.stop()


EXPERIMENT = {
    "experiment": "multinode",
    "seeds": 2,
    "datasets": [{"name": "synthetic", "options": {"num_users": 400, "num_items": 300, "max_len": 60, "seed": 1}}],
    "targets": [{"model": "bpr", "train": {"epochs": 8, "batch_size": 512}}],
    "attacks": [
        {"attack": "ptd", "epochs": 15, "batch_size": 128},
        {"attack": "ptq", "epochs": 10, "finetune_epochs": 10, "batch_size": 128},
    ],
    "split": {"attacker_fraction": 0.5},
    "k": 20,
}


def _raysteal(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "raysteal", *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"raysteal {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.multinode
@pytest.mark.ray
@pytest.mark.slow
def test_run_and_tune_through_address_use_both_nodes(cluster, tmp_path):
    from raysteal.experiment.config import load_experiment
    from raysteal.results import ResultStore

    c, nodes = cluster
    cache = tmp_path / "cache"

    exp = tmp_path / "run.yaml"
    exp.write_text(yaml.safe_dump(EXPERIMENT))
    _raysteal("run", str(exp), "--out", str(tmp_path / "run"), "--cache-dir", str(cache), "--address", c.address, "--quiet")
    rows = ResultStore(tmp_path / "run").load()
    assert len(rows) == 2 * 2 and rows["agr@k"].notna().all()  # every run of the grid, complete
    assert set(rows["node_id"]) == set(nodes), f"runs did not use both nodes: {rows['node_id'].value_counts().to_dict()}"

    sweep = {
        **{k: v for k, v in EXPERIMENT.items() if k not in ("seeds", "attacks")},
        "experiment": "multinode-tune",
        "attacks": [EXPERIMENT["attacks"][1]],
        "search_space": {"attack.lr": {"grid": [1e-2, 5e-3, 2e-3, 1e-3]}, "budget": {"choice": [40, 80]}},
        "tune": {"metric": "agr@k/heldout", "scheduler": None, "max_concurrent": 2, "resources": {"cpu": 1}},
    }
    tune_file = tmp_path / "tune.yaml"
    tune_file.write_text(yaml.safe_dump(sweep))
    done = _raysteal("tune", str(tune_file), "--out", str(tmp_path / "tune"), "--cache-dir", str(cache), "--address", c.address, "--quiet")
    assert "best configuration" in done.stdout
    trials = ResultStore(tmp_path / "tune").load()
    assert len(trials) == 4 and (trials["tune_status"] == "completed").all() and trials["agr@k/heldout"].notna().all()
    assert set(trials["node_id"]) == set(nodes), f"trials did not use both nodes: {trials['node_id'].value_counts().to_dict()}"
    best = load_experiment(tmp_path / "tune" / "best.yaml")
    assert best.attacks[0]["lr"] in (1e-2, 5e-3, 2e-3, 1e-3)


def test_cluster_files_parse_and_install_raysteal():
    """The launcher YAML and the KubeRay manifests parse and hold what cluster/README.md relies on."""
    launcher = yaml.safe_load((REPO / "cluster" / "aws-gpu.yaml").read_text())
    assert {
        "cluster_name",
        "provider",
        "available_node_types",
        "head_node_type",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    } <= set(launcher)
    nodes = launcher["available_node_types"]
    assert launcher["head_node_type"] in nodes
    assert any(node.get("resources", {}).get("GPU", 0) >= 1 for node in nodes.values()), "a GPU worker type"
    assert any("pip install -e ~/raysteal" in cmd for cmd in launcher["setup_commands"])
    assert launcher["file_mounts"]["~/raysteal"] == "."
    assert any("ray start --head" in cmd for cmd in launcher["head_start_ray_commands"])

    cluster_docs = list(yaml.safe_load_all((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))
    kinds = {d["kind"]: d for d in cluster_docs}
    assert set(kinds) == {"PersistentVolumeClaim", "RayCluster"}
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    ray_cluster = kinds["RayCluster"]
    assert ray_cluster["apiVersion"] == "ray.io/v1" and ray_cluster["spec"]["rayVersion"] == "2.60.0"

    job = yaml.safe_load((REPO / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["spec"]["shutdownAfterJobFinishes"] is True
    command = job["spec"]["entrypoint"].split("&&")[-1].split()
    assert command[:2] == ["raysteal", "run"] and (REPO / command[2]).is_file()  # the experiment it runs exists
    for spec in (ray_cluster["spec"], job["spec"]["rayClusterSpec"]):
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        assert any(
            c["resources"]["limits"].get("nvidia.com/gpu") for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]
        )
        for group in groups:
            pod = group["template"]["spec"]
            assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]] == [claim]
            mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
            assert "/results" in mounts  # --out on the shared volume
    assert "/results/" in job["spec"]["entrypoint"]
