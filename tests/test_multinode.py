"""Two Ray nodes on one machine, data in S3: ingest, train and embed through ``ray job
submit``, each job's work on both nodes; then queries against the ``s3://`` table.

Each node is a ``ray start --block`` process with its own temp folder, stopped by
its pid (never ``ray stop``, which would end every Ray process on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port
from deltalake import DeltaTable

from pipelines.storage import object_store_options
from pipelines.synthetic import generate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    address: str  # the dashboard: where jobs are submitted and state is read
    env: dict[str, str]
    nodes: list[subprocess.Popen]  # head first

    def node_ids(self) -> set[str]:
        from ray.util.state import list_nodes

        return {n.node_id for n in list_nodes(address=self.address) if n.state == "ALIVE"}

    def actor_nodes(self, class_part: str) -> set[str]:
        """The nodes that ran actors whose class name contains ``class_part``."""
        from ray.util.state import list_actors

        actors = [a for a in list_actors(address=self.address, limit=10_000)
                  if class_part in a.class_name]
        return {a.node_id for a in actors}

    def submit(self, *job: str, env_vars: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess:
        """``ray job submit`` of ``python JOB...``; waits for it and returns its outcome."""
        runtime_env = json.dumps({"env_vars": env_vars or {}})
        command = [str(BIN / "ray"), "job", "submit", "--address", self.address,
                   "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--",
                   "python", *job]
        deadline = time.monotonic() + 120
        while True:  # the head's job agent may still be starting: it then refuses the job
            result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                    timeout=600)
            if "No available agent" not in result.stderr or time.monotonic() > deadline:
                return result
            time.sleep(3)


def start_node(args: list[str], env: dict[str, str], temp_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=3",
         "--object-store-memory=500000000", f"--temp-dir={temp_dir}",
         "--disable-usage-stats", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def two_nodes(s3_endpoint) -> Iterator[Cluster]:
    """A head and a second node (3 CPUs each) on loopback, with the moto S3 settings
    in their environment; both stopped at the end whatever happens."""
    dashboard, port = free_port(), free_port()
    # A throwaway loopback cluster: no token auth (a real cluster should keep it on).
    # The jobs' `python` must be this environment's, as it is on an activated venv.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(f"http://127.0.0.1:{dashboard}", env, [])
    # short temp folders: Ray's Unix sockets live there, and pytest's paths are too long
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    try:
        cluster.nodes.append(start_node(
            ["--head", f"--port={port}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"],
            env, temp / "head"))
        cluster.nodes.append(start_node([f"--address=127.0.0.1:{port}"], env,
                                        temp / "second"))
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(cluster.node_ids()) == 2:
                    break
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                pass
            assert time.monotonic() < deadline, "the two Ray nodes did not come up"
            time.sleep(2)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.send_signal(signal.SIGTERM)  # drains and stops that node's processes
        for node in cluster.nodes:
            node.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def upload_synthetic(root: Path, prefix: str) -> str:
    """The small synthetic benchmark's clips in S3, with a manifest there that names
    them by ``s3://`` URI and one that is missing; returns the manifest's URI."""
    import s3fs

    s3 = s3fs.S3FileSystem()
    manifest = pd.read_csv(generate(root, train_groups=6, test_groups=2, val_groups=2,
                                    seed=1, captions_per_clip=1))
    s3.put(str(root / "clips") + "/", f"{prefix}/clips/", recursive=True)
    manifest["uri"] = [f"s3://{prefix}/clips/{Path(u).name}" for u in manifest["uri"]]
    gone = {"video_id": "gone", "uri": f"s3://{prefix}/clips/gone.mp4", "caption": "nothing",
            "split": "train", "group": -1}
    manifest = pd.concat([manifest, pd.DataFrame([gone])])
    with s3.open(f"{prefix}/manifest.csv", "w") as f:
        manifest.to_csv(f, index=False)
    return f"s3://{prefix}/manifest.csv"


def test_jobs_run_on_both_nodes_with_data_in_s3(two_nodes, s3_bucket, keyword_model, tmp_path):
    prefix = f"{s3_bucket}/two-nodes"
    ingest_uri, db_uri = f"s3://{prefix}/ingest", f"s3://{prefix}/db"
    nodes = two_nodes.node_ids()

    result = two_nodes.submit(
        "pipelines/ingest.py", "--manifest", upload_synthetic(tmp_path / "synth", prefix),
        "--output", ingest_uri, "--keyword-model", keyword_model, "--frame-size", "64",
        "--local-max-videos", "0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "30 decoded ok, 1 failed" in result.stdout
    options = object_store_options(ingest_uri)
    videos = DeltaTable(f"{ingest_uri}/videos", storage_options=options).to_pandas()
    assert len(videos) == videos["video_id"].nunique() == 30
    errors = DeltaTable(f"{ingest_uri}/errors", storage_options=options).to_pandas()
    assert list(errors["video_id"]) == ["gone"]
    assert two_nodes.actor_nodes("VideoSampler") == nodes

    checkpoint = tmp_path / "ckpt"  # one file system for both nodes, as on a shared mount
    result = two_nodes.submit(
        "pipelines/train.py", "--data", ingest_uri, "--output", str(checkpoint),
        "--epochs", "1", "--batch-size", "4", "--num-workers", "2", "--cpus-per-worker", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert two_nodes.actor_nodes("RayTrainWorker") == nodes  # 2 CPUs each: one per node

    result = two_nodes.submit(
        "pipelines/embed.py", "--data", ingest_uri, "--checkpoint", str(checkpoint / "final"),
        "--db", db_uri, "--batch-size", "4", "--local-max-videos", "0",
        # a few batches would all go to the first actor up: start once both are ready
        env_vars={"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert two_nodes.actor_nodes("VideoEmbedder") == nodes

    from pipelines.search import VideoSearch

    search = VideoSearch(db_uri, "videos", str(checkpoint / "final"),
                         keyword_model=keyword_model)
    found = search.search("a red circle moves left", k=5, candidates=10)
    assert len(found) == 5 and found["video_id"].is_unique
    assert set(found["video_id"]) <= set(videos["video_id"])
    query = subprocess.run(
        [sys.executable, "pipelines/query.py", "--db", db_uri, "--checkpoint",
         str(checkpoint / "final"), "--keyword-model", keyword_model, "--k", "3", "--json",
         "--text", "a red circle moves left"], cwd=REPO, env=two_nodes.env, capture_output=True,
        text=True, timeout=300)
    assert query.returncode == 0, query.stderr[-3000:]
    assert [r["video_id"] for r in json.loads(query.stdout)] == list(found["video_id"][:3])
