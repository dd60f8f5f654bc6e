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
    out = sampler(batch)
    assert out.column("video_id").to_pylist() == ["g1", "g2"]
    assert out.column("num_frames").to_pylist() == [2, 2]
    assert len(errors) == 1
    assert errors[0]["video_id"] == "p" and errors[0]["stage"] == "decode"
    assert errors[0]["error_type"] == "ChildCrashedError" and "SIGSEGV" in errors[0]["message"]
