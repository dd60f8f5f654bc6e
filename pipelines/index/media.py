"""What a search result shows and plays: its video's stored frames as thumbnails, the
video file itself, and the images a search by example accepts.

Everything here is looked up by the id of a row of the table, never by a path a
caller gives: a ``video_id`` that is not in the table has no thumbnail and no file,
whatever it spells (``../etc/passwd`` is just an id that no row has). Thumbnails
are the JPEGs the ingest job stored (``videos/``'s ``frames``), read from the
ingest run the table records (``TableState``), so a result's picture is a frame
the model saw, at the second asked for, and no video is decoded to show one.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from PIL import Image

from pipelines.core import storage
from pipelines.core.sql import sql_equals
from pipelines.ingestion.output import open_ingest

if TYPE_CHECKING:  # search imports this module
    from pipelines.index.search import TableVersion

#: the image formats a search by example takes (what Pillow decodes and a browser sends)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
#: the most pixels an uploaded image may have: a 12 MP photo passes, a decompression
#: bomb (a few KB of PNG that decodes to gigabytes) does not
MAX_IMAGE_PIXELS = 40_000_000
#: seconds a presigned link to an object-store video stays valid
PRESIGN_SECONDS = 3600


class UnknownVideoError(LookupError):
    """A video id no row of the table has."""

    def __init__(self, video_id: str) -> None:
        super().__init__(f"no video {video_id!r} in the table")


def checked_image(data: bytes) -> bytes:
    """``data`` once it is known to be one image of ``IMAGE_FORMATS`` within
    ``MAX_IMAGE_PIXELS``; ValueError says what it is instead. The header is read
    first, so a bomb is refused before any of it is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            if kind in IMAGE_FORMATS and width * height <= MAX_IMAGE_PIXELS:
                image.load()  # a truncated or corrupt file fails here
    except Exception as exc:  # noqa: BLE001 - whatever Pillow cannot read is not an image
        raise ValueError(f"the upload is not an image Pillow can read ({type(exc).__name__})"
                         ) from None
    if kind not in IMAGE_FORMATS:
        raise ValueError(f"the upload is a {kind} image: send one of "
                         f"{', '.join(IMAGE_FORMATS)}")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"the image has {width} x {height} pixels: at most "
                         f"{MAX_IMAGE_PIXELS:,} are taken")
    return data


@dataclass(frozen=True)
class Playable:
    """Where a video's bytes are: a ``path`` on this machine to stream, or a ``url``
    (a presigned object-store link) to send the browser to."""

    path: str | None = None
    url: str | None = None


class VideoMedia:
    """The thumbnails and files of the videos of a search's table, in the table version
    the search reads (``current_version``, ``VideoSearch.current_version``), the
    thumbnails from the ingest run that version records."""

    def __init__(self, current_version: Callable[[], TableVersion],
                 thumbnails_cached: int = 1024) -> None:
        self.current_version = current_version
        self._frame = functools.lru_cache(maxsize=thumbnails_cached)(self._read_frame)
        self._splits: tuple[int | None, list[str]] = (None, [])  # of one table version

    def uri(self, video_id: str) -> str:
        """The uri the table records for ``video_id`` (UnknownVideoError if none)."""
        rows = self.current_version().dataset.to_table(
            columns=["uri"], filter=sql_equals("video_id", video_id), limit=1)
        if not rows.num_rows:
            raise UnknownVideoError(video_id)
        return rows.column("uri")[0].as_py()

    def playable(self, video_id: str) -> Playable:
        """Where the browser gets ``video_id``'s bytes: a local file to stream with range
        requests, or a presigned link for an object-store video (its credentials stay on
        the server; the link opens that one object, for ``PRESIGN_SECONDS``)."""
        uri = self.uri(video_id)
        if "://" not in uri or uri.startswith("file://"):
            return Playable(path=uri.removeprefix("file://"))
        fs, path = storage.filesystem(uri)
        try:
            return Playable(url=fs.sign(path, expiration=PRESIGN_SECONDS))
        except NotImplementedError:
            raise ValueError(f"videos at {uri.split('://')[0]}:// cannot be played "
                             "from the search page: it signs object-store links only") from None

    def thumbnail(self, video_id: str, at_s: float = 0.0) -> bytes:
        """The stored JPEG of ``video_id`` nearest ``at_s`` seconds into the video
        (UnknownVideoError for an id with no row, or none with frames)."""
        self.uri(video_id)  # a row of the table, this version: no thumbnails of others
        return self.frame(video_id, at_s)

    def frame(self, video_id: str, at_s: float = 0.0) -> bytes:
        """:meth:`thumbnail` of an id just read from the table (a search's result), without
        looking it up again (about 2 ms a result)."""
        state = self.current_version().state
        return self._frame(state.ingest_output, state.ingest_version, video_id,
                           round(float(at_s), 1))

    def captions(self, video_id: str) -> list[dict]:
        """What the ingest run says of ``video_id``: each caption with its keywords, split
        and span (``start_s``, ``end_s``; None for the whole video)."""
        self.uri(video_id)
        state = self.current_version().state
        rows = open_part_once(state.ingest_output, state.ingest_version, "captions").to_table(
            filter=pc.field("video_id") == video_id)
        wanted = [c for c in ("caption", "keywords", "split", "start_s", "end_s")
                  if c in rows.column_names]
        return rows.select(wanted).to_pylist()

    def splits(self) -> list[str]:
        """The splits of the table's rows, in order (a filter's choices)."""
        dataset = self.current_version().dataset
        if self._splits[0] != dataset.version:
            values = pc.unique(dataset.to_table(columns=["split"]).column("split"))
            self._splits = (dataset.version, sorted(v for v in values.to_pylist() if v))
        return self._splits[1]

    def _read_frame(self, output: str, version: int, video_id: str, at_s: float) -> bytes:
        """The stored frame nearest ``at_s`` of ``video_id`` in ingest run ``version`` of
        ``output`` (cached: a page shows the same thumbnails again and again)."""
        rows = locate_frames(output, version).rows(video_id, ["timestamps_s", "frames"])
        frames = [(abs(t - at_s), frame)
                  for times, jpegs in zip(rows.column("timestamps_s").to_pylist(),
                                          rows.column("frames").to_pylist(), strict=True)
                  for t, frame in zip(times or [], jpegs or [], strict=False)]
        if not frames:
            raise UnknownVideoError(video_id)
        return min(frames, key=lambda pair: pair[0])[1]


class FrameLocator:
    """Which Parquet row groups of one ingest run's ``videos/`` hold each video's rows,
    found once by reading the ``video_id`` column alone.

    A filter on ``video_id`` over the whole dataset reads the ``frames`` of every row
    group whose statistics do not rule the id out, and ingest writes videos in the
    order they decode, so an id's statistics rule out little: each thumbnail would read
    the output's frames. Located, it reads the row groups that hold the video (each at
    most ``ingestion.output.VIDEO_ROWS_PER_GROUP`` windows). The index costs one read of the ids (a
    million windows: tens of MB, once per ingest run a replica serves)."""

    def __init__(self, dataset: pads.Dataset) -> None:
        self.groups = [group for fragment in dataset.get_fragments()
                       for group in fragment.split_by_row_group()]
        self.holding: dict[str, list[int]] = {}
        for i, group in enumerate(self.groups):
            ids = group.to_table(columns=["video_id"]).column("video_id")
            for video_id in pc.unique(ids).to_pylist():
                self.holding.setdefault(video_id, []).append(i)

    def rows(self, video_id: str, columns: list[str]) -> pa.Table:
        """``columns`` of ``video_id``'s rows (none for an id the output lacks)."""
        tables = [self.groups[i].to_table(columns=columns,
                                          filter=pc.field("video_id") == video_id)
                  for i in self.holding.get(video_id, [])]
        if not tables:
            return pa.table({c: pa.array([], pa.null()) for c in columns})
        return pa.concat_tables(tables)


@functools.lru_cache(maxsize=2)
def locate_frames(output: str, version: int) -> FrameLocator:
    """The frame locator of one ingest run (built on a replica's first thumbnail)."""
    return FrameLocator(open_part_once(output, version, "videos"))


@functools.lru_cache(maxsize=8)
def open_part_once(output: str, version: int, part: str) -> pads.Dataset:
    """One part (``videos``, ``captions``) of one ingest run, opened once (its Delta log
    read once)."""
    return open_ingest(output, version).dataset(part)
