"""Sample frames uniformly in time from one video with decord, as JPEG bytes.

Only the sampled frames are decoded (``VideoReader.get_batch``), and decord
scales them while decoding, so a long or high-resolution video never sits in
memory whole. PyAV reads the container header first for the native size (and
to name audio-only files), which decodes nothing.
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


def sample_times(duration_s: float, fps: float, max_frames: int) -> list[float]:
    """Times (s) of frames sampled every ``1/fps`` from 0, evenly thinned to ``max_frames``
    (:func:`vtr_models.frame_thinning.even_indices`, the rule the model's preprocessing uses).

    A video shorter than one period still gives one frame (at 0 s).
    """
    if fps <= 0 or max_frames < 1:
        raise ValueError("fps must be > 0 and max_frames >= 1")
    count = max(1, math.ceil(duration_s * fps - 1e-9))
    times = np.arange(count) / fps
    return times[even_indices(count, max_frames)].tolist()


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
    """Sample one local video file: metadata, frame timestamps and JPEG frames.

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
    times = sample_times(duration, options.fps, options.max_frames)
    indices = sorted({min(total - 1, round(t * native_fps)) for t in times})
    frames = reader.get_batch(indices).asnumpy()
    return {
        "duration_s": duration,
        "native_fps": native_fps,
        "width": width,
        "height": height,
        "num_frames": len(indices),
        "timestamps_s": reader.get_frame_timestamp(indices)[:, 0].astype(float).tolist(),
        "frames": encode_jpeg(frames, options.jpeg_quality),
    }
