"""Two Ray nodes on one machine, data in S3: ingest, train and embed through ``ray job
submit``, each job's work on both nodes, each job losing the second node midway;
then queries against the ``s3://`` table.

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
import psutil
import pytest
from conftest import free_port
from deltalake import DeltaTable

from pipelines.core.storage import object_store_options
from pipelines.sources.synthetic import generate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    address: str  # the dashboard: where jobs are submitted and state is read
    port: int  # the head's GCS
    env: dict[str, str]
    temp: Path  # a temp folder per node under it
    nodes: list[subprocess.Popen]  # head first

    def start_node(self, name: str, *args: str) -> None:
        """``ray start --block`` of one more node (3 CPUs), with its own temp folder and
        its own agent port: every Ray on the machine (another test's too) would otherwise
        take 52365, and a head whose agent cannot bind it refuses every job."""
        self.nodes.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1",
             "--num-cpus=3", "--object-store-memory=500000000",
             f"--dashboard-agent-listen-port={free_port()}",
             f"--temp-dir={self.temp / name}", "--disable-usage-stats",
             *(args or [f"--address=127.0.0.1:{self.port}"])],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait_for_nodes(self, count: int) -> set[str]:
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(ids := self.node_ids()) == count:
                    return ids
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                pass
            assert time.monotonic() < deadline, f"{count} Ray nodes did not come up"
            time.sleep(2)

    def head_id(self) -> str:
        from ray.util.state import list_nodes

        return next(n.node_id for n in list_nodes(address=self.address) if n.is_head_node)

    def node_ids(self) -> set[str]:
        from ray.util.state import list_nodes

        return {n.node_id for n in list_nodes(address=self.address) if n.state == "ALIVE"}

    def actors(self, class_part: str) -> list:
        from ray.util.state import list_actors

        return [a for a in list_actors(address=self.address, limit=10_000)
                if class_part in a.class_name]

    def actor_nodes(self, class_part: str) -> set[str]:
        """The nodes that ran actors whose class name contains ``class_part``."""
        return {a.node_id for a in self.actors(class_part)}

    def kill_raylet_when_busy(self, name: str, node_id: str, class_part: str):
        """A ``during`` callback for ``submit``: once actors of ``class_part`` are alive on
        node ``node_id`` (started as ``name``), SIGKILL that node's raylet, losing the
        node and everything on it (a restarted actor then shows the node it runs on
        now). Returns whether the job was still running then."""
        def during(job: subprocess.Popen) -> bool:
            while job.poll() is None:
                if any(a.state == "ALIVE" and a.node_id == node_id
                       for a in self.actors(class_part)):
                    time.sleep(1)  # let them take some work
                    raylet = next(p for p in psutil.process_iter(["name", "cmdline"])
                                  if p.info["name"] == "raylet"
                                  and str(self.temp / name) in " ".join(p.info["cmdline"]))
                    raylet.kill()
                    return job.poll() is None
                time.sleep(0.5)
            return False
        return during

    def submit(self, *job: str, env_vars: dict[str, str] | None = None, during=None):
        """``ray job submit`` of ``python JOB...``; waits for it and returns its outcome
        and what ``during(process)`` returned while it ran."""
        runtime_env = json.dumps({"env_vars": env_vars or {}})
        command = [str(BIN / "ray"), "job", "submit", "--address", self.address,
                   "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--",
                   "python", *job]
        deadline = time.monotonic() + 120
        while True:  # the head's job agent may still be starting: it then refuses the job
            process = subprocess.Popen(command, env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            seen = during(process) if during else None
            stdout, stderr = process.communicate(timeout=600)
            if "No available agent" not in stderr or time.monotonic() > deadline:
                return subprocess.CompletedProcess(command, process.returncode, stdout,
                                                   stderr), seen
            time.sleep(3)


@pytest.fixture
def two_nodes(s3_endpoint) -> Iterator[Cluster]:
    """A head and a second node (3 CPUs each) on loopback, with the moto S3 settings
    in their environment; every node stopped by its pid at the end whatever happens."""
    # A throwaway loopback cluster: no token auth (a real cluster should keep it on).
    # The jobs' `python` must be this environment's, as it is on an activated venv.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    # short temp folders: Ray's Unix sockets live there, and pytest's paths are too long
    cluster = Cluster(f"http://127.0.0.1:{dashboard}", free_port(), env,
                      Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")), [])
    try:
        cluster.start_node("head", "--head", f"--port={cluster.port}",
                           "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={dashboard}")
        cluster.start_node("second")
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.send_signal(signal.SIGTERM)  # drains and stops that node's processes
        for node in cluster.nodes:
            try:
                node.wait(timeout=3)
            except subprocess.TimeoutExpired:  # draining can take 30 s: no need here
                for process in [*psutil.Process(node.pid).children(recursive=True), node]:
                    process.kill()
                node.wait(timeout=60)
        shutil.rmtree(cluster.temp, ignore_errors=True)


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


def test_jobs_on_two_nodes_survive_losing_one(two_nodes, s3_bucket, keyword_model, tmp_path):
    """Ingest (s3 to s3), train and embed (into an s3:// LanceDB table) each lose the
    second node's raylet while their actors work on it. Ingest and embed finish on the
    head and hold every video exactly once; training (one worker per node) restarts
    from its last checkpoint on the head and a node added in place of the lost one.
    Queries then read the s3 table."""
    prefix = f"{s3_bucket}/two-nodes"
    ingest_uri, db_uri = f"s3://{prefix}/ingest", f"s3://{prefix}/db"
    head = two_nodes.head_id()
    (second,) = two_nodes.node_ids() - {head}

    result, busy = two_nodes.submit(
        "pipelines/ingest.py", "--manifest", upload_synthetic(tmp_path / "synth", prefix),
        "--data", ingest_uri, "--keyword-model", keyword_model, "--frame-size", "64",
        "--local-max-videos", "0",
        # 2 s a video: the head's actors alone would need 20 s, time for the second
        # node's to start even while other tests load the machine
        env_vars={"VTR_FAILPOINT": "decode.video:2"},
        during=two_nodes.kill_raylet_when_busy("second", second, "VideoSampler"))
    assert busy, "the job ended before the node was lost:\n" + result.stderr[-3000:]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert two_nodes.node_ids() == {head}
    assert "30 decoded ok, 1 failed" in result.stdout
    options = object_store_options(ingest_uri)
    tables = {name: DeltaTable(f"{ingest_uri}/{name}", storage_options=options).to_pandas()
              for name in ("videos", "captions", "errors")}
    videos = tables["videos"]
    assert len(videos) == videos["video_id"].nunique() == 30  # nothing lost or doubled
    assert sorted(tables["captions"]["video_id"]) == sorted(videos["video_id"])
    assert list(tables["errors"]["video_id"]) == ["gone"]

    two_nodes.start_node("second-again")
    (second,) = two_nodes.wait_for_nodes(2) - {head}
    checkpoint = tmp_path / "ckpt"  # one file system for every node, as on a shared mount

    def lose_a_worker_node_after_a_checkpoint(job: subprocess.Popen) -> float | None:
        """Once an epoch is checkpointed, lose the second node (and the worker on it),
        then add a node in its place, as an autoscaler would."""
        registered = checkpoint / "ray" / "train" / "checkpoint_manager_snapshot.json"
        while job.poll() is None:
            # a checkpoint Ray Train has registered (a folder alone may be one it drops)
            if registered.exists():
                if two_nodes.kill_raylet_when_busy("second-again", second, "RayTrainWorker")(job):
                    lost_at = time.time()
                    two_nodes.start_node("third")
                    return lost_at
                return None
            time.sleep(0.5)
        return None

    result, lost_at = two_nodes.submit(
        "pipelines/train.py", "--data", ingest_uri, "--checkpoint", str(checkpoint),
        "--epochs", "3", "--batch-size", "4", "--workers", "2", "--cpus-per-worker", "2",
        # batches of the nearest videos' captions, mined by each worker every epoch
        "--hard-negatives", "2", "--hard-negatives-by", "videos",
        # the model's motion frames would double the image tower's work: not what is tested
        "--disable", "motion",
        during=lose_a_worker_node_after_a_checkpoint)
    assert lost_at is not None, "the job ended before the node was lost"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (third,) = two_nodes.wait_for_nodes(2) - {head}
    # one worker per node (2 of 3 CPUs each), before the loss and after
    assert two_nodes.actor_nodes("RayTrainWorker") == {head, second, third}
    rows = [json.loads(line) for line in (checkpoint / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # epoch 1 ended before the loss and was not run again; the run went on after it
    assert rows[0]["time"] < lost_at < rows[-1]["time"]

    result, busy = two_nodes.submit(
        "pipelines/embed.py", "--data", ingest_uri, "--checkpoint", str(checkpoint / "final"),
        "--db", db_uri, "--batch-size", "2", "--local-max-videos", "0",
        # few batches would all go to the first actor up: start once both are ready
        env_vars={"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120",
                  "VTR_FAILPOINT": "embed.batch:1"},
        during=two_nodes.kill_raylet_when_busy("third", third, "VideoEmbedder"))
    assert busy, "the job ended before the node was lost:\n" + result.stderr[-3000:]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert two_nodes.node_ids() == {head}

    from pipelines.index.search import VideoSearch

    search = VideoSearch(db_uri, "videos", str(checkpoint / "final"),
                         keyword_model=keyword_model)
    rows = search.table.to_pandas()
    assert sorted(rows["video_id"]) == sorted(videos["video_id"])  # each exactly once
    found = search.search("a red circle moves left", k=5, candidates=10)
    assert len(found) == 5 and found["video_id"].is_unique
    query = subprocess.run(
        [sys.executable, "pipelines/query.py", "--db", db_uri, "--checkpoint",
         str(checkpoint / "final"), "--keyword-model", keyword_model, "--k", "3",
         "--candidates", "10", "--json", "--text", "a red circle moves left"], cwd=REPO,
        env=two_nodes.env, capture_output=True, text=True, timeout=300)
    assert query.returncode == 0, query.stderr[-3000:]
    assert [r["video_id"] for r in json.loads(query.stdout)] == list(found["video_id"][:3])

