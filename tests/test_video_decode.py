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
    window_rows,
    window_spans,
    window_times,
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
    (out,) = window_rows(decode_video(path, SamplingOptions(fps=1.0, max_frames=12,
                                                            frame_size=224)))
    assert out["window_start_s"] == 0.0 and out["window_end_s"] == out["duration_s"]
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
    (out,) = window_rows(decode_video(str(sample_videos / "bikes.mp4"),
                                      SamplingOptions(fps=5.0, max_frames=12)))
    assert out["num_frames"] == 12
    ts = np.array(out["timestamps_s"])
    assert ts[0] == 0.0 and ts[-1] > 9.0 and np.all(np.diff(ts) > 0)


def test_clip_shorter_than_one_period_gives_one_frame(tmp_path):
    clip = write_clip(tmp_path / "short.mp4", num_frames=6, fps=12)  # 0.5 s
    (out,) = window_rows(decode_video(str(clip), SamplingOptions(fps=1.0)))
    assert out["num_frames"] == 1 and out["timestamps_s"] == [0.0]


def test_one_frame_video_is_rejected(tmp_path):
    clip = write_clip(tmp_path / "one.mp4", num_frames=1)
    with pytest.raises(VideoDecodeError, match="1 decodable frame"):
        decode_video(str(clip), SamplingOptions())


def test_window_spans_cover_the_video_with_whole_windows():
    assert window_spans(10.0, 12.0, 4.0) == [(0.0, 10.0)]  # no longer than a window
    assert window_spans(12.0, 12.0, 4.0) == [(0.0, 12.0)]
    assert window_spans(30.0, 0.0, 4.0) == [(0.0, 30.0)]  # windows off
    assert window_spans(28.0, 12.0, 4.0) == [(0.0, 12.0), (4.0, 16.0), (8.0, 20.0),
                                             (12.0, 24.0), (16.0, 28.0)]
    # a video that ends mid-window: the last window moves back to end with it
    assert window_spans(30.5, 12.0, 4.0)[-2:] == [(16.0, 28.0), (18.5, 30.5)]


def test_every_moment_no_longer_than_window_minus_stride_is_whole_in_a_window():
    spans = window_spans(100.0, 12.0, 4.0)
    for start in np.arange(0.0, 92.0, 0.25):
        assert any(a <= start and start + 8.0 <= b for a, b in spans), start


def test_window_frames_come_from_one_grid_and_overlapping_windows_share_them():
    times, windows = window_times(30.0, SamplingOptions(fps=1.0, max_frames=12))
    assert times == [float(t) for t in range(30)]  # each second decoded once
    for start, end, positions in windows:
        assert [times[p] for p in positions] == [float(t) for t in range(int(start), int(end))]
    # more grid frames in a window than max_frames: thinned evenly inside it
    times, windows = window_times(30.0, SamplingOptions(fps=2.0, max_frames=12))
    for start, end, positions in windows:
        inside = [times[p] for p in positions]
        assert len(inside) == 12 and inside[0] == start and end - 1.0 < inside[-1] < end


def test_long_video_becomes_window_rows_decoded_once(tmp_path):
    clip = write_clip(tmp_path / "long.mp4", num_frames=30 * 4, fps=4)  # 30 s
    options = SamplingOptions(fps=1.0, frame_size=64, segment_seconds=12.0, segment_stride=4.0)
    sampled = decode_video(str(clip), options)
    assert len(sampled["frames"]) == 30  # one JPEG per sampled second, shared by windows
    rows = window_rows(sampled)
    assert [(r["window_start_s"], r["window_end_s"]) for r in rows] == window_spans(
        sampled["duration_s"], 12.0, 4.0)
    for row in rows:
        assert row["num_frames"] == len(row["frames"]) == len(row["timestamps_s"]) == 12
        assert row["window_start_s"] - 0.05 <= row["timestamps_s"][0]
        assert row["timestamps_s"][-1] < row["window_end_s"]
    assert rows[0]["frames"][4:] == rows[1]["frames"][:8]  # the same bytes, not a re-decode
