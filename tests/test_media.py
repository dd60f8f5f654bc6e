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
