"""benchmarks/pretrain_stills.py: its captions say where the shapes are, and what it
writes loads as a backbone."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pipelines.sources.synthetic import COLORS

SHAPE = r"(?:a|the) (\w+) \w+"
PLACE = re.compile(rf"{SHAPE} (?:at|in) the ((?:top |upper |lower |bottom )?"
                   r"(?:far left|left|centre|right|far right)|top|upper|lower|bottom)")
RELATION = re.compile(rf"{SHAPE} (to the left of|left of|to the right of|right of|above|over|"
                      rf"below|under) {SHAPE}")
SIDE = {"to the left of": (0, -1), "left of": (0, -1), "to the right of": (0, 1),
        "right of": (0, 1), "above": (1, -1), "over": (1, -1), "below": (1, 1), "under": (1, 1)}


@pytest.fixture
def stills(benchmark):
    return benchmark("pretrain_stills")


def box(img: np.ndarray, color: str) -> np.ndarray:
    """x0, y0, x1, y1 of the pixels of ``color``."""
    ys, xs = np.nonzero((img == COLORS[color]).all(-1))
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


def centre(img: np.ndarray, color: str) -> np.ndarray:
    """(x, y) of the middle of the box around the pixels of ``color`` (a triangle's
    mean pixel sits below the centre it was drawn at)."""
    x0, y0, x1, y1 = box(img, color)
    return np.array([x0 + x1, y0 + y1]) / 2


def overlap(img: np.ndarray, colors: list[str]) -> bool:
    """Whether the two shapes' boxes meet (one may hide part of the other)."""
    a, b = (box(img, c) for c in colors)
    return bool((a[:2] <= b[2:] + 1).all() and (b[:2] <= a[2:] + 1).all())


# each grid's words, written out again here: the script's tables are what is tested
WORDS = {3: (["top", "", "bottom"], ["left", "", "right"]),
         5: (["top", "upper", "", "lower", "bottom"], ["far left", "left", "", "right",
                                                        "far right"])}


def cell(xy: np.ndarray, size: int, grid: int) -> str:
    column, row = (np.minimum(xy // (size / grid), grid - 1)).astype(int)
    rows, columns = WORDS[grid]
    return " ".join(w for w in (rows[row], columns[column]) if w) or "centre"


@pytest.mark.parametrize("grid", [3, 5])
def test_captions_say_where_each_shape_is(stills, grid: int) -> None:
    rng = np.random.default_rng(0)
    said = {"place": 0, "relation": 0}
    for _ in range(300):
        img, text = stills.still(rng, grid)
        if overlap(img, [w for w in text.split() if w in COLORS]):
            continue
        if relation := RELATION.fullmatch(text):
            a, side, b = relation.groups()
            axis, sign = SIDE[side]
            offset = centre(img, a) - centre(img, b)
            assert np.sign(offset[axis]) == sign, text
            assert abs(offset[axis]) >= abs(offset[1 - axis]), text  # the main axis
            said["relation"] += 1
        else:
            places = PLACE.findall(text)
            assert len(places) == 2, text
            for color, where in places:
                xy = centre(img, color)  # within a pixel of where it was drawn
                step = stills.SIZE / grid
                if (np.abs(xy - step * np.round(xy / step)) > 1).all():
                    assert cell(xy, stills.SIZE, grid) == where, text
            said["place"] += 1
    assert min(said.values()) > 100, said


def test_the_written_weights_load_as_a_backbone(stills, tmp_path, capsys) -> None:
    from vtr_models import create_model

    weights = tmp_path / "stills.pt"
    stills.main(["--output", str(weights), "--steps", "2", "--batch-size", "8",
                 "--eval-every", "1"])
    assert '"step": 2' in capsys.readouterr().out
    saved = torch.load(weights, weights_only=True)
    model = create_model("meanp", backbone=f"vtr-tiny:{weights}")
    loaded = model.backbone.clip.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
