"""benchmarks/direction_probe.py: its labels are the direction of the motion that comes first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.sources.synthetic import DIRECTIONS, captions, random_motion


def pixels(picture) -> torch.Tensor:
    """A PIL picture as ``[3, H, W]`` floats, unnormalised (the probe's transform slot)."""
    return torch.from_numpy(np.asarray(picture, dtype=np.float32)).permute(2, 0, 1)


@pytest.fixture
def probe(benchmark):
    return benchmark("direction_probe")


def test_the_label_is_the_first_motions_direction_in_every_wording(probe) -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        first = random_motion(rng, "red", "circle", 64)
        second = random_motion(rng, "blue", "square", 64)
        for text in captions(first, second, rng):
            assert probe.first_direction(text) == list(DIRECTIONS).index(first.direction), text


def test_a_groups_clips_are_labelled_by_the_shape_that_moves_first(probe) -> None:
    """The three clips of a group: A then B, B then A, and the reversal (B's opposite
    first); on the hard tier the first half's moving shape is the one whose pixels change."""
    videos, labels = probe.clips(2, "hard", np.random.default_rng(1), pixels)
    assert videos.shape == (6, 8, 3, probe.SIZE, probe.SIZE)
    for clip, label in zip(videos, labels.tolist(), strict=True):
        moved = (clip[3] - clip[0]).abs().sum(0).nonzero().float()  # pixels the motion changed
        before = clip[0].abs().sum(0)[moved[:, 0].long(), moved[:, 1].long()] > 0
        # the changed pixels the shape left, and those it reached: the move's direction
        left_from, reached = moved[before].mean(0), moved[~before].mean(0)
        dy, dx = (reached - left_from).tolist()
        found = ("left" if dx < 0 else "right") if abs(dx) > abs(dy) else ("up" if dy < 0
                                                                             else "down")
        assert list(DIRECTIONS)[label] == found
    assert labels[2] != labels[1]  # the reversal's first motion is B's, the other way
