"""Where a result's video is played from: a file on the server, or a presigned link to
the one object in S3 (moto), and only for ids the table has."""

from __future__ import annotations

import types
import urllib.request

import lance
import pyarrow as pa
import pytest

from pipelines.index.media import UnknownVideoError, VideoMedia


@pytest.fixture
def media(tmp_path, s3_bucket) -> VideoMedia:
    import s3fs

    s3fs.S3FileSystem().pipe(f"{s3_bucket}/clips/a.mp4", b"the bytes of a")
    rows = pa.table({"video_id": ["a", "b"],
                     "uri": [f"s3://{s3_bucket}/clips/a.mp4", str(tmp_path / "b.mp4")]})
    version = types.SimpleNamespace(dataset=lance.write_dataset(rows, tmp_path / "t.lance"))
    return VideoMedia(lambda: version)


def test_an_s3_video_plays_through_a_presigned_link_to_its_object(media, s3_bucket):
    playable = media.playable("a")
    assert playable.path is None and "Signature" in playable.url
    assert f"/{s3_bucket}/clips/a.mp4" in playable.url
    assert "X-Amz-Expires=3600" in playable.url or "Expires=" in playable.url
    with urllib.request.urlopen(playable.url, timeout=30) as response:  # what a browser does
        assert response.read() == b"the bytes of a"


def test_a_local_video_is_a_path_and_an_unknown_id_nothing(media, tmp_path):
    assert media.playable("b").path == str(tmp_path / "b.mp4")
    for video_id in ("c", "../b", str(tmp_path / "b.mp4"), "a' OR '1'='1"):
        with pytest.raises(UnknownVideoError):
            media.playable(video_id)


def test_a_video_s_frames_are_read_from_the_row_groups_that_hold_it(tmp_path):
    """Videos in decode order, not sorted, each a run of windows, as ingest writes them:
    the locator finds every row of a video across row groups (and a video in both
    files), and reads no group without it."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from pipelines.index.media import FrameLocator

    for part, order in enumerate(([3, 0, 6, 1, 5], [2, 4, 3])):
        rows = [{"video_id": f"v{v}", "timestamps_s": [float(w)],
                 "frames": [f"jpeg {part} {v} {w}".encode()]} for v in order for w in range(6)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"part{part}.parquet",
                       row_group_size=8)
    dataset = pads.dataset(tmp_path)
    locator = FrameLocator(dataset)
    assert len(locator.groups) == 4 + 3 and locator.holding["v3"] == [0, 5, 6]
    everything = dataset.to_table().to_pylist()
    for video_id in (f"v{i}" for i in range(7)):
        expected = [r for r in everything if r["video_id"] == video_id]
        found = locator.rows(video_id, ["video_id", "timestamps_s", "frames"]).to_pylist()
        assert sorted(found, key=str) == sorted(expected, key=str)
        assert len(locator.holding[video_id]) < len(locator.groups)
    assert locator.rows("v99", ["frames"]).num_rows == 0


def test_ingest_writes_videos_in_small_row_groups(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.ingestion.output import VIDEO_ROWS_PER_GROUP, IngestStore
    from pipelines.ingestion.schemas import VIDEOS

    row = {name: None for name in VIDEOS.names}
    rows = [{**row, "video_id": f"v{i}", "frames": [b"x" * 1000]} for i in range(100)]
    IngestStore(str(tmp_path)).write_part("videos", pa.Table.from_pylist(rows, schema=VIDEOS),
                                          whole=True, replace=set())
    (path,) = (tmp_path / "videos").glob("*.parquet")
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_rows == 100
    assert max(metadata.row_group(i).num_rows
               for i in range(metadata.num_row_groups)) <= VIDEO_ROWS_PER_GROUP
