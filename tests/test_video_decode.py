"""Frame sampling against real videos, checked with an independent decoder (PyAV)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.ingestion.video_decode import (
    SamplingOptions,
    VideoDecodeError,
    decode_video,
    sample_times,
    scaled_size,
)
from pipelines.sources.samples import write_clip


def test_sample_times_one_per_period_within_duration():
    assert sample_times(10.0, 1.0, 12) == [float(i) for i in range(10)]
    assert sample_times(10.2, 1.0, 12) == [float(i) for i in range(11)]
    assert sample_times(3.0, 2.0, 12) == [i / 2 for i in range(6)]


def test_sample_times_short_video_gives_one_frame():
    assert sample_times(0.3, 1.0, 12) == [0.0]


def test_sample_times_caps_uniformly():
    times = sample_times(100.0, 1.0, 12)
    assert len(times) == 12
    assert times[0] == 0.0 and times[-1] == 99.0
    gaps = np.diff(times)
    assert gaps.max() - gaps.min() <= 1.0  # uniform up to rounding to the 1 s grid


def test_scaled_size_sets_short_side():
    assert scaled_size(640, 272, 224) == (527, 224)
    assert scaled_size(272, 640, 224) == (224, 527)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _pyav_frame_at(path: str, t: float, size: tuple[int, int]) -> np.ndarray:
    """The frame PyAV shows at time ``t`` (the last frame starting at or before it)."""
    with av.open(path) as container:
        chosen = None
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time <= t + 1e-6:
                chosen = frame
            else:
                break
        return chosen.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()


def test_bikes_ten_frames_one_second_apart_match_pyav(sample_videos):
    path = str(sample_videos / "bikes.mp4")
    out = decode_video(path, SamplingOptions(fps=1.0, max_frames=12, frame_size=224))
    assert out["num_frames"] == 10 and len(out["frames"]) == 10
    assert out["width"] == 640 and out["height"] == 272 and out["native_fps"] == 25.0
    assert out["duration_s"] == pytest.approx(10.0, abs=0.05)
    ts = np.array(out["timestamps_s"])
    np.testing.assert_allclose(np.diff(ts), 1.0, atol=0.05)
    assert ts[0] >= 0 and ts[-1] < out["duration_s"]
    for t, jpeg in zip(ts, out["frames"], strict=True):
        ours = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        assert min(ours.shape[:2]) == 224
        ref = _pyav_frame_at(path, float(t), (ours.shape[1], ours.shape[0]))
        assert _psnr(ours, ref) >= 30.0, f"frame at {t}s differs from PyAV's"


def test_long_video_is_capped_uniformly(sample_videos):
    out = decode_video(str(sample_videos / "bikes.mp4"), SamplingOptions(fps=5.0, max_frames=12))
    assert out["num_frames"] == 12
    ts = np.array(out["timestamps_s"])
    assert ts[0] == 0.0 and ts[-1] > 9.0 and np.all(np.diff(ts) > 0)


def test_clip_shorter_than_one_period_gives_one_frame(tmp_path):
    clip = write_clip(tmp_path / "short.mp4", num_frames=6, fps=12)  # 0.5 s
    out = decode_video(str(clip), SamplingOptions(fps=1.0))
    assert out["num_frames"] == 1 and out["timestamps_s"] == [0.0]


def test_one_frame_video_is_rejected(tmp_path):
    clip = write_clip(tmp_path / "one.mp4", num_frames=1)
    with pytest.raises(VideoDecodeError, match="1 decodable frame"):
        decode_video(str(clip), SamplingOptions())
