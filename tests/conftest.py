"""Shared fixtures: real sample videos, generated clips, the real MiniLM model, Ray, S3,
the synthetic benchmark and a LanceDB table of it."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import av
import lancedb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from deltalake import write_deltalake

from pipelines.ingestion.output import IngestStore, IngestVersion
from pipelines.ingestion.schemas import VIDEOS
from pipelines.sources import samples
from pipelines.sources.synthetic import generate

REPO = Path(__file__).resolve().parents[1]


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 holding only an AAC audio stream."""
    rate = 44100
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        wave = (np.sin(np.arange(int(rate * seconds)) / 20) * 0.3).astype(np.float32)
        for start in range(0, len(wave), 1024):
            chunk = wave[start : start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def sample_videos() -> Path:
    return samples.sample_video_dir()


@pytest.fixture(scope="session")
def keyword_model() -> str:
    return str(samples.bundled_minilm())


def wake(model, scale: float = 0.5):
    """``model`` with every parameter that starts at zero outside the backbone (the gates and
    zero output maps through which the full model starts as CLIP, and zero biases) drawn
    at random, so that every part acts as in a trained model; returns the model."""
    import torch

    inner = getattr(model, "backbone", None)
    backbone = {id(p) for p in inner.parameters()} if inner is not None else set()
    with torch.no_grad():
        for parameter in model.parameters():
            if id(parameter) not in backbone and not parameter.any():
                parameter.normal_(0.0, scale)
    return model


@pytest.fixture
def benchmark(monkeypatch):
    """``benchmark(NAME)``: the script ``benchmarks/NAME.py`` as a module. The scripts
    import each other by name, as ``python benchmarks/NAME.py`` runs them, so their
    folder is on ``sys.path`` for the test."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module


def make_checkpoint(folder: Path, seed: int, model: str = "lfemi", max_frames: int = 8,
                    **overrides) -> Path:
    """A random-init ``model`` over ``vtr-tiny`` (with config ``overrides``), every part
    awake (``wake``): tables and searches need no trained one, and an untrained one would
    rank as ``meanp``."""
    import torch

    from vtr_models.checkpoint import save_checkpoint
    from vtr_models.factory import create_model

    torch.manual_seed(seed)
    return save_checkpoint(wake(create_model(model, max_frames=max_frames, **overrides)),
                           folder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback; AWS_* variables point s3fs (and Ray workers) at it.

    Set before Ray starts, so that the workers inherit the same environment.
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint) -> str:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("vtr-test")
    return "vtr-test"


@pytest.fixture(scope="module")
def ray_local(s3_endpoint):
    """A local Ray instance (2 CPUs) for one module's in-process job tests.

    Module-scoped so that it is gone before a test that runs its own cluster
    (``ray stop`` stops every Ray on the machine).
    """
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a repository script (e.g. ``pipelines/train.py``) as its own process, on its own Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900, **kwargs)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory, keyword_model) -> Path:
    """A small synthetic benchmark (18 train, 6 val, 6 test videos, one caption each),
    ingested at 64 px."""
    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate(root, train_groups=6, test_groups=2, val_groups=2, seed=1,
                        captions_per_clip=1)
    result = run(["pipelines/ingest.py", "--manifest", str(manifest), "--data",
                  str(root / "ingest"), "--frame-size", "64", "--keyword-model", keyword_model])
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "ingest"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return make_checkpoint(root / "a", 0), make_checkpoint(root / "b", 1)


@pytest.fixture(scope="session")
def data_with_broken_video(synthetic_data, tmp_path_factory) -> Path:
    """The synthetic ingest output plus a committed run that adds one video whose stored
    frames are not JPEGs."""
    data = tmp_path_factory.mktemp("embed-data") / "ingest"
    shutil.copytree(synthetic_data, data)
    store = IngestStore(str(data))
    latest = store.latest()
    broken = store.delta("videos").to_pyarrow_dataset().head(1).to_pylist()[0]
    broken.update(video_id="broken", uri="/nowhere/broken.mp4", frames=[b"not a jpeg"],
                  ingest_version=latest.version + 1)
    write_deltalake(str(data / "videos"), pa.Table.from_pylist([broken], schema=VIDEOS),
                    mode="append")
    store.commit(IngestVersion(latest.version + 1, {**latest.tables, "videos": store.delta(
        "videos").version()}, latest.settings))
    return data


@pytest.fixture(scope="session")
def table(data_with_broken_video, checkpoints, tmp_path_factory) -> dict:
    """A LanceDB table of the synthetic videos: embedded with checkpoint a, then rebuilt
    with checkpoint b (which must replace a)."""
    db = tmp_path_factory.mktemp("lancedb") / "db"
    outputs = []
    for checkpoint, flags in zip(checkpoints, ([], ["--overwrite"]), strict=True):
        result = run(["pipelines/embed.py", "--data", str(data_with_broken_video),
                      "--checkpoint", str(checkpoint), "--db", str(db), "--table", "videos",
                      "--batch-size", "4", "--index-min-rows", "10", *flags])
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result)
    rows = lancedb.connect(str(db)).open_table("videos").count_rows()
    return {"db": str(db), "data": data_with_broken_video, "checkpoint": checkpoints[1],
            "outputs": outputs, "rows": rows}


def save_clip_weights(path: Path, seed: int) -> str:
    """An open_clip ``vtr-tiny`` state dict in a file (as a user keeps ``ViT-B-32``'s
    weights offline); returns the backbone spec that names it, ``vtr-tiny:PATH``."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    torch.save(open_clip.create_model("vtr-tiny").state_dict(), path)
    return f"vtr-tiny:{path}"


@pytest.fixture(scope="session")
def clip_spec(tmp_path_factory) -> str:
    return save_clip_weights(tmp_path_factory.mktemp("clip") / "vtr-tiny.pt", seed=5)


@pytest.fixture(scope="session")
def zero_shot_table(synthetic_data, clip_spec, tmp_path_factory) -> dict:
    """The synthetic test split's videos in a LanceDB table embedded zero-shot: by the
    untrained full model on ``clip_spec``'s weights, with no checkpoint."""
    db = tmp_path_factory.mktemp("zero-shot") / "db"
    result = run(["pipelines/embed.py", "--data", str(synthetic_data), "--checkpoint",
                  clip_spec, "--db", str(db), "--table", "videos", "--split", "test"])
    assert result.returncode == 0, result.stderr[-3000:]
    return {"db": str(db), "spec": clip_spec, "rows": 6}


@contextlib.contextmanager
def serving(config: dict, folder: Path) -> Iterator[str]:
    """``vtr serve`` of a Serve ``config`` (its ``http_options`` name the host and port),
    written to ``folder``; yields the app's URL once its page answers, and shuts it down
    with Ctrl-C after (also when it never came up: no Ray left behind)."""
    (folder / "serve.yaml").write_text(yaml.safe_dump(config))
    log_path = folder / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - open for the process's life
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "vtr"), "serve",
                             str(folder / "serve.yaml")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{config['http_options']['port']}"
    try:
        deadline = time.monotonic() + 300
        while True:
            written = log_path.read_text()
            assert proc.poll() is None and "Exception importing application" not in written, \
                written[-3000:]
            assert time.monotonic() < deadline, written[-3000:]
            try:
                with urllib.request.urlopen(url + "/", timeout=10) as response:
                    if response.status == 200:
                        break
            except OSError:  # not listening yet, or no app behind the proxy yet
                pass
            time.sleep(1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: serve run shuts the application down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


RAY_FIXTURES = {"ray_local", "synthetic_data", "data_with_broken_video", "table",
                "zero_shot_table"}
# `make test` runs 2 pytest-xdist workers. Each module stays on one worker, so that its
# module and session fixtures are built once; test_serve.py goes with test_embed_query.py,
# whose LanceDB table (about 100 s to build) it shares. The slowest modules are handed
# out first, so that what is left at the end is short.
SAME_WORKER_AS = {"tests/test_serve.py": "tests/test_embed_query.py"}
SLOWEST_FIRST = ["tests/test_multinode.py", "tests/test_embed_query.py", "tests/test_train.py",
                 "tests/test_refresh_faults.py", "tests/test_refresh.py",
                 "tests/test_search_page.py"]


def worker_group(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    return SAME_WORKER_AS.get(module, module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's scheduler by scope, with ``worker_group`` as the scope (its own
    ``loadgroup`` marks do not reach pytest 9's node ids)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkerGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    config.option.loadscopereorder = False  # keep SLOWEST_FIRST's order
    return ByWorkerGroup(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that starts Ray through a fixture (``-m 'not slow'``
    then runs only the tests that need no Ray), besides the modules marked by hand;
    put the slowest modules first (stable: each module keeps its own order)."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

    def rank(item: pytest.Item) -> int:
        group = worker_group(item.nodeid)
        return SLOWEST_FIRST.index(group) if group in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)
