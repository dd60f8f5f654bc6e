"""Arrow schemas of the ingest outputs: the contract later jobs and users read.

Every part is written with an explicit schema so that ``pyarrow.dataset.dataset(path)``
sees the same columns and types whatever the data, empty parts included.
"""

import pyarrow as pa

VIDEOS = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("duration_s", pa.float64()),
        ("native_fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("num_frames", pa.int32()),
        ("timestamps_s", pa.list_(pa.float64())),
        ("frames", pa.list_(pa.binary())),
        ("size_bytes", pa.int64()),
        ("mtime", pa.float64()),
        ("etag", pa.string()),
        ("ingest_version", pa.int64()),  # the run that wrote this row (see ingestion.output)
        # the window of the video the row holds (video_decode.window_spans): a clip no
        # longer than a window is one row from 0 to its duration
        ("window_start_s", pa.float64()),
        ("window_end_s", pa.float64()),
    ]
)

CAPTIONS = pa.schema(
    [
        ("video_id", pa.string()),
        ("caption", pa.string()),
        ("keywords", pa.list_(pa.string())),
        ("split", pa.string()),
        # the part of the video the caption tells of (seconds); null: the whole video
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
    ]
)



def has_windows(schema: pa.Schema) -> bool:
    """Whether rows of ``schema`` (``videos/``, or a LanceDB table embedded from it) are
    windows of their videos; an output or table written before windows has a row per
    video."""
    return "window_start_s" in schema.names


ERRORS = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ]
)
