"""Sample frames uniformly in time from one video with decord, as JPEG bytes, by window.

A video no longer than one window (``segment_seconds``) is one window, sampled
as a clip always was: every ``1/fps`` from 0, thinned evenly to ``max_frames``.
A longer one becomes overlapping windows ``segment_seconds`` long, one every
``segment_stride`` seconds, the last one ending where the video ends. Frames
are sampled once per video on one grid (every ``1/fps`` from 0), and each
window takes the grid's frames inside it, thinned to ``max_frames``: windows
that overlap share their frames, and no frame is decoded twice.

Only the sampled frames are decoded (``VideoReader.get_batch``), a chunk at a
time, and decord scales them while decoding, so a long or high-resolution
video never sits in memory whole: what a decode holds grows with the video's
length only by the JPEGs it returns. PyAV reads the container header first for
the native size (and to name audio-only files), which decodes nothing.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from vtr_models import even_indices


class VideoDecodeError(ValueError):
    """A file that opens but is not a usable video (no video stream, one frame...)."""


@dataclass(frozen=True)
class SamplingOptions:
    """How frames are sampled and stored; the same for every video of a job."""

    fps: float = 1.0
    max_frames: int = 12
    frame_size: int = 224
    jpeg_quality: int = 90
    decode_threads: int = 1
    segment_seconds: float = 12.0  # window length; 0: every video is one window
    segment_stride: float = 4.0  # seconds between window starts


#: frames decoded by one ``get_batch`` call: what a decode holds raw at a time
DECODE_CHUNK = 32


def sample_times(duration_s: float, fps: float, max_frames: int) -> list[float]:
    """Times (s) of frames sampled every ``1/fps`` from 0, evenly thinned to ``max_frames``
    (:func:`vtr_models.frame_thinning.even_indices`, the rule the model's preprocessing uses).

    A video shorter than one period still gives one frame (at 0 s).
    """
    if fps <= 0 or max_frames < 1:
        raise ValueError("fps must be > 0 and max_frames >= 1")
    times = sampling_grid(duration_s, fps)
    return times[even_indices(len(times), max_frames)].tolist()


def sampling_grid(duration_s: float, fps: float) -> np.ndarray:
    """Times (s) every ``1/fps`` from 0 inside a video of ``duration_s`` seconds (at least
    the one at 0 s): the frames a video's windows choose from."""
    return np.arange(max(1, math.ceil(duration_s * fps - 1e-9))) / fps


def window_spans(duration_s: float, segment_seconds: float,
                 segment_stride: float) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of each window of a video of ``duration_s`` seconds.

    One window ``(0, duration_s)`` when the video is no longer than a window (or
    ``segment_seconds`` is 0); otherwise windows of ``segment_seconds`` starting every
    ``segment_stride`` seconds, and a last one moved back to end with the video, so
    that every window is whole and the video's end is in one.
    """
    if segment_seconds <= 0 or duration_s <= segment_seconds:
        return [(0.0, duration_s)]
    if segment_stride <= 0:
        raise ValueError("segment_stride must be > 0")
    spans, start = [], 0.0
    while start + segment_seconds < duration_s - 1e-9:
        spans.append((start, start + segment_seconds))
        start = round(start + segment_stride, 6)
    spans.append((duration_s - segment_seconds, duration_s))
    return spans


def window_times(duration_s: float, options: SamplingOptions
                 ) -> tuple[list[float], list[tuple[float, float, list[int]]]]:
    """The video's sampling grid and its windows.

    Returns the times (s) of the frames to decode, in order, and for each window its
    ``(start_s, end_s, positions)``: the positions in those times of its frames, the
    grid's frames inside the window thinned evenly to ``max_frames``. A video of one
    window gets :func:`sample_times`'s frames. Frames no window keeps are not decoded.
    """
    spans = window_spans(duration_s, options.segment_seconds, options.segment_stride)
    if len(spans) == 1:
        times = sample_times(duration_s, options.fps, options.max_frames)
        return times, [(0.0, duration_s, list(range(len(times))))]
    grid = sampling_grid(duration_s, options.fps)
    count = len(grid)
    windows, used = [], set()
    for start, end in spans:
        inside = np.flatnonzero((grid >= start - 1e-9) & (grid < end - 1e-9))
        if not len(inside):  # a window narrower than the grid's period
            inside = np.asarray([min(count - 1, math.floor(start * options.fps + 1e-9))])
        kept = inside[even_indices(len(inside), options.max_frames)].tolist()
        used.update(kept)
        windows.append((start, end, kept))
    order = sorted(used)
    position = {index: i for i, index in enumerate(order)}
    times = grid[order].tolist()
    return times, [(start, end, [position[i] for i in kept]) for start, end, kept in windows]


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side set to ``short_side``, aspect kept."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def probe(path: str) -> tuple[int, int]:
    """Native (width, height) of the first video stream, from the container header."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise VideoDecodeError(f"no video stream (streams: {', '.join(kinds)})")
        ctx = container.streams.video[0].codec_context
        if not ctx.width or not ctx.height:
            raise VideoDecodeError("video stream has no frame size")
        return ctx.width, ctx.height


def encode_jpeg(frames: np.ndarray, quality: int) -> list[bytes]:
    """JPEG bytes of each ``[H, W, 3]`` uint8 frame."""
    from PIL import Image

    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def decode_video(path: str, options: SamplingOptions) -> dict:
    """Sample one local video file: metadata, and its windows' frames and timestamps.

    Returns the video's metadata, ``timestamps_s`` and ``frames`` (JPEG) of every
    frame sampled once, and ``windows``: ``(start_s, end_s, positions)`` per window
    (:func:`window_times`). :func:`window_rows` turns it into ``videos/`` rows.
    Raises on any unusable input; the caller records the error and moves on.
    """
    import decord

    width, height = probe(path)
    out_w, out_h = scaled_size(width, height, options.frame_size)
    reader = decord.VideoReader(
        path, width=out_w, height=out_h, num_threads=options.decode_threads
    )
    total = len(reader)
    if total < 2:
        raise VideoDecodeError(f"only {total} decodable frame(s): not a video")
    native_fps = float(reader.get_avg_fps())
    duration = float(reader.get_frame_timestamp(total - 1)[1])
    times, windows = window_times(duration, options)
    # two sampled times on one native frame (a video slower than --fps) read it once
    indices = [min(total - 1, round(t * native_fps)) for t in times]
    unique = sorted(set(indices))
    jpegs: list[bytes] = []
    for start in range(0, len(unique), DECODE_CHUNK):
        chunk = unique[start:start + DECODE_CHUNK]
        jpegs.extend(encode_jpeg(reader.get_batch(chunk).asnumpy(), options.jpeg_quality))
    slot = {index: i for i, index in enumerate(unique)}
    windows = [(start, end, sorted({slot[indices[p]] for p in positions}))
               for start, end, positions in windows]
    return {
        "duration_s": duration,
        "native_fps": native_fps,
        "width": width,
        "height": height,
        "timestamps_s": reader.get_frame_timestamp(unique)[:, 0].astype(float).tolist(),
        "frames": jpegs,
        "windows": windows,
    }


def window_rows(sampled: dict) -> list[dict]:
    """One ``videos/`` row per window of a :func:`decode_video` result: the video's
    metadata, the window's span (``window_start_s``, ``window_end_s``) and its frames."""
    metadata = {k: v for k, v in sampled.items()
                if k not in ("timestamps_s", "frames", "windows")}
    return [{**metadata, "window_start_s": start, "window_end_s": end,
             "num_frames": len(positions),
             "timestamps_s": [sampled["timestamps_s"][p] for p in positions],
             "frames": [sampled["frames"][p] for p in positions]}
            for start, end, positions in sampled["windows"]]
