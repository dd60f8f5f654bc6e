"""benchmarks/query_latency.py: a table of long videos' windows, written in batches."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def latency(benchmark):
    return benchmark("query_latency")


def test_windows_continue_across_batches_and_share_their_videos_centre(latency) -> None:
    """Rows are windows of videos in order, whatever the batch boundaries (the table is
    written in batches whose seed is their first row's offset); a video's windows are
    drawn around one centre of the mixture, as a long video keeps its topic."""
    clusters = latency.Clusters.random(50, 32, row_cosine=0.8)
    batches = [latency.random_rows(6, 32, 3, "m", seed=start, clusters=clusters, windows=4)
               for start in (0, 6)]
    ids = [i for b in batches for i in b.column("video_id").to_pylist()]
    starts = [s for b in batches for s in b.column("window_start_s").to_pylist()]
    assert ids == [f"v{i // 4:07d}" for i in range(12)]
    stride = latency.WINDOW_STRIDE_S
    assert starts == [stride * (i % 4) for i in range(12)]
    first = batches[0].slice(0, 1).to_pylist()[0]
    assert first["window_end_s"] == first["window_start_s"] + 3
    assert first["duration_s"] == 3 * stride + 3
    second = batches[1].slice(0, 1).to_pylist()[0]  # row 6: window 2 of video 1
    assert second["timestamps_s"] == [2 * stride + t for t in range(3)]
    vectors = np.concatenate([np.stack(b.column("vector").to_numpy(zero_copy_only=False))
                              for b in batches])
    nearest = (vectors @ clusters.centres.T).argmax(1)  # each row's closest centre
    assert all(len(set(nearest[v * 4:v * 4 + 4])) == 1 for v in range(3))
    assert len(set(nearest[::4])) > 1  # and the videos' centres differ
