"""The decode stage without Ray: one crashing or broken video costs only itself."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow as pa

from pipelines.ingestion.stages import VideoSampler
from pipelines.ingestion.video_decode import SamplingOptions, decode_video
from pipelines.sources.samples import write_clip


def crash_on_poison(path: str, options: SamplingOptions) -> dict:
    """decode_video, except that a file named poison*.mp4 kills the decoder process."""
    if Path(path).name.startswith("poison"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_video(path, options)


def test_native_crash_costs_one_video(tmp_path):
    good1 = write_clip(tmp_path / "good1.mp4", seed=1)
    poison = write_clip(tmp_path / "poison.mp4", seed=2)
    good2 = write_clip(tmp_path / "good2.mp4", seed=3)
    errors: list[dict] = []
    sampler = VideoSampler(SamplingOptions(), errors.extend, timeout_s=60, decode=crash_on_poison)
    batch = pa.table({"video_id": ["g1", "p", "g2"], "uri": [str(good1), str(poison), str(good2)]})
    out = pa.concat_tables(sampler(batch))
    assert out.column("video_id").to_pylist() == ["g1", "g2"]
    assert out.column("num_frames").to_pylist() == [2, 2]
    assert len(errors) == 1
    assert errors[0]["video_id"] == "p" and errors[0]["stage"] == "decode"
    assert errors[0]["error_type"] == "ChildCrashedError" and "SIGSEGV" in errors[0]["message"]


def test_a_long_video_comes_out_in_blocks_of_windows(tmp_path, monkeypatch):
    """No table the decode stage yields grows with a video's length: a long video's
    windows come out at most ``WINDOWS_PER_BLOCK`` rows at a time."""
    from pipelines.ingestion import stages

    monkeypatch.setattr(stages, "WINDOWS_PER_BLOCK", 2)
    long = write_clip(tmp_path / "long.mp4", num_frames=26 * 4, fps=4, size=(32, 32))
    options = SamplingOptions(frame_size=32, segment_seconds=8.0, segment_stride=4.0)
    sampler = VideoSampler(options, [].extend, timeout_s=60)
    tables = list(sampler(pa.table({"video_id": ["long"], "uri": [str(long)]})))
    assert [t.num_rows for t in tables] == [2, 2, 2]  # windows at 0, 4, ..., 16 and 18 s
    starts = pa.concat_tables(tables).column("window_start_s").to_pylist()
    assert starts == [0.0, 4.0, 8.0, 12.0, 16.0, 18.0]
