"""The synthetic benchmark: only frame order tells a group's clips apart, in many wordings."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.ingestion.video_decode import SamplingOptions, decode_video, window_rows
from pipelines.sources.samples import write_video
from pipelines.sources.synthetic import ORDERINGS, generate, group_clips


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32)


def test_a_groups_clips_reorder_one_picture_set():
    rng = np.random.default_rng(0)
    for _ in range(5):
        (_, first), *others = group_clips(rng, size=32, steps=4)
        key = sorted(picture.tobytes() for picture in first)
        for _, pictures in others:
            assert sorted(picture.tobytes() for picture in pictures) == key
            assert [p.tobytes() for p in pictures] != [p.tobytes() for p in first]


def unmatched(clips: list[str], options: SamplingOptions) -> float:
    """The largest share of pixels (percent) by which a frame sampled from one of ``clips``
    differs from its closest match among the frames sampled from the first clip."""
    decoded = [[pixels(j) for j in window_rows(decode_video(uri, options))[0]["frames"]]
               for uri in clips]
    worst = 0.0
    for frames in decoded[1:]:
        for frame in frames:
            worst = max(worst, min(float((np.abs(frame - other).max(-1) > 64).mean() * 100)
                                   for other in decoded[0]))
    return worst


def test_sampling_at_any_rate_sees_the_same_frames_in_every_clip(tmp_path):
    """Each position is held for a whole second, so the frames the ingest job samples (1 fps,
    or 2 fps) from the three clips are one set: no sampling phase reveals direction. Smooth
    motion at 4 fps, played forwards and backwards, fails the same check."""
    manifest = pd.read_csv(generate(tmp_path, train_groups=1, test_groups=0, seed=3, size=64))
    clips = manifest.drop_duplicates("video_id")["uri"].tolist()
    assert len(clips) == 3
    for fps in (1.0, 2.0):
        options = SamplingOptions(fps=fps, max_frames=16, frame_size=64)
        assert unmatched(clips, options) < 0.5  # codec noise only
    rng = np.random.default_rng(3)
    (_, smooth), _, _ = group_clips(rng, size=64, steps=16)  # 16 positions, one frame each
    control = [str(write_video(tmp_path / f"smooth{i}.mp4", frames, fps=4))
               for i, frames in enumerate((smooth, smooth[::-1]))]
    assert unmatched(control, SamplingOptions(fps=1.0, frame_size=64)) > 1  # 3 %


def test_captions_are_paraphrases_in_order():
    rng = np.random.default_rng(0)
    clips = [texts for _ in range(20) for texts, _ in group_clips(rng, size=16, steps=2)]
    assert all(len(set(texts)) == 3 for texts in clips)  # three wordings of every clip
    captions = [text for texts in clips for text in texts]
    joiners = [ordering.replace("{first}", "|").replace("{second}", "|").strip("|")
               for ordering in ORDERINGS]  # e.g. ", then", " before ", "after |, "
    used = {j for j in joiners for c in captions if all(part in c for part in j.split("|"))}
    assert len(used) >= len(joiners) - 1
    verbs = {c.split()[3] for c in captions if c.startswith(("a ", "an ", "the "))}
    assert len(verbs) >= 4


def test_the_easy_tier_shows_one_shape_at_a_time_on_its_directions_path():
    """Easy tier: every picture holds one shape (the moving one), each motion runs along
    its direction's one path through the centre (a reversal covers the same positions),
    and a group's clips are still reorderings of one picture set."""
    rng = np.random.default_rng(0)
    size, steps = 32, 4
    for _ in range(5):
        clips = group_clips(rng, size=size, steps=steps, tier="easy")
        (_, first), *others = clips
        for picture in first:
            colours = {tuple(p) for p in picture.reshape(-1, 3) if p.any()}
            assert len(colours) == 1  # one shape, in one colour
        for half in (first[:steps], first[steps:]):
            boxes = [np.argwhere(p.any(-1)) for p in half]  # the shape's pixels, (y, x)
            ys, xs = zip(*((b.min(0) + b.max(0)) / 2 for b in boxes), strict=True)
            centre = size / 2
            # the path passes through the centre, along one axis, symmetric about it
            assert np.ptp(xs) < 1 or np.ptp(ys) < 1
            assert abs(np.mean(xs) - centre) < 1 and abs(np.mean(ys) - centre) < 1
        key = sorted(picture.tobytes() for picture in first)
        for _, pictures in others:
            assert sorted(picture.tobytes() for picture in pictures) == key
    with pytest.raises(ValueError, match="unknown tier"):
        group_clips(rng, size=size, steps=steps, tier="medium")


def test_the_easy_tier_hides_order_from_the_sampled_frames_too(tmp_path):
    """What ingest samples at 1 fps from an easy group's three clips is one set of
    frames: mean pooling is at chance inside a group on this tier as well."""
    manifest = pd.read_csv(generate(tmp_path, train_groups=1, test_groups=0, seed=4, size=64,
                                    tier="easy"))
    clips = manifest.drop_duplicates("video_id")["uri"].tolist()
    assert unmatched(clips, SamplingOptions(fps=1.0, max_frames=16, frame_size=64)) < 0.5
