r"""A synthetic text-video benchmark that only temporal order can solve.

    vtr synthetic --output data/synth \
        --train-groups 134 --val-groups 33 --test-groups 33 [--tier easy]

Each clip shows two coloured shapes on black; first one moves, then the other.
Its captions say, in order, what happens, in several paraphrases ("a red
circle moves left, then a blue square moves up"; "a blue square goes upward
after the red circle slides to the left"). Clips come in groups of three,
each a reordering of the same eight pictures (A's four steps, then B's):

1. A then B;
2. B then A: the two halves swapped (B moves, then A; each shape jumps back
   to where its motion starts);
3. clip 1 played backwards: reversed B, then reversed A ("... moves down,
   then ... moves right").

Every position is held for one second, a whole sampling period of the ingest
job's default 1 fps, so frames sampled at any phase are the same set of
pictures in all three clips. A model that ignores frame order (``meanp``)
therefore sees the same input for the three and is at chance (one in three)
inside a group; with smooth motion, the sampling phase would leak direction.
Groups are wholly in ``train``, ``val`` or ``test``.

Two tiers. ``hard`` (the default, the benchmark's first tier): both shapes are
on screen throughout, and every motion starts at a random place. ``easy``: one
shape on screen at a time (the one that moves), and every motion runs along
one fixed path through the centre of the frame for its direction, so a motion
and its reversal cover the same positions; the order of events is still all
that tells a group's clips apart, but each frame shows one event's shape
alone, at a place that depends on the direction only. Writes
``OUTPUT/clips/*.mp4`` and ``OUTPUT/manifest.csv`` in the ingest format, one
row per caption.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.sources.samples import write_video

COLORS = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (240, 220, 40), "white": (240, 240, 240), "purple": (160, 60, 200),
    "orange": (250, 140, 20), "cyan": (40, 220, 220),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
# the paraphrases: how a direction, a motion and the order of two motions are said
DIRECTION_PHRASES = {
    "left": ("left", "to the left", "leftward"), "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "upwards"), "down": ("down", "downward", "downwards"),
}
VERBS = ("moves", "slides", "goes", "travels", "glides", "shifts")
ORDERINGS = (  # {first} happens before {second}
    "{first}, then {second}", "{first} and then {second}", "first {first}, then {second}",
    "{first}; after that {second}", "{second} after {first}", "{first} before {second}",
    "after {first}, {second}", "{first}, and next {second}",
)
CAPTIONS_PER_CLIP = 3


@dataclass(frozen=True)
class Motion:
    """One shape moving in a straight line from ``start`` (pixels, centre) along ``direction``."""

    color: str
    shape: str
    direction: str
    start: tuple[float, float]
    distance: float

    @property
    def end(self) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return self.start[0] + dx * self.distance, self.start[1] + dy * self.distance

    def reversed(self) -> Motion:
        return Motion(self.color, self.shape, OPPOSITE[self.direction], self.end, self.distance)

    def phrase(self, rng: np.random.Generator) -> str:
        """One way of saying this motion ("the red circle slides to the left")."""
        article = rng.choice(("an" if self.color[0] in "aeiou" else "a", "the"))
        verb = rng.choice(VERBS)
        where = rng.choice(DIRECTION_PHRASES[self.direction])
        return f"{article} {self.color} {self.shape} {verb} {where}"


def captions(first: Motion, second: Motion, rng: np.random.Generator,
             count: int = CAPTIONS_PER_CLIP) -> list[str]:
    """``count`` different paraphrases of "``first``, then ``second``"."""
    found: list[str] = []
    while len(found) < count:
        ordering = str(rng.choice(ORDERINGS))
        text = ordering.format(first=first.phrase(rng), second=second.phrase(rng))
        if text not in found:
            found.append(text)
    return found


def draw(img: np.ndarray, shape: str, color: tuple[int, int, int], centre, radius: float) -> None:
    """Paint a filled shape onto an ``[H, W, 3]`` frame in place."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    dx, dy = xs - centre[0], ys - centre[1]
    if shape == "circle":
        inside = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        inside = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    else:  # triangle, apex up
        inside = (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    img[inside] = color


TIERS = ("hard", "easy")


def render(first: Motion, second: Motion, size: int, steps: int,
           show_still: bool = True) -> list[np.ndarray]:
    """The pictures of ``first`` moving (``second`` still at its start), then ``second``
    moving (``first`` still at its end): ``steps`` positions per motion. Without
    ``show_still`` only the moving shape is drawn (the easy tier)."""
    radius = size * 0.09
    frames = []
    for moving, still in ((first, second), (second, first)):
        still_at = still.end if still is first else still.start
        for i in range(steps):
            t = i / (steps - 1)
            at = tuple(a + (b - a) * t for a, b in zip(moving.start, moving.end, strict=True))
            img = np.zeros((size, size, 3), np.uint8)
            if show_still:
                draw(img, still.shape, COLORS[still.color], still_at, radius)
            draw(img, moving.shape, COLORS[moving.color], at, radius)
            frames.append(img)
    return frames


def random_motion(rng: np.random.Generator, color: str, shape: str, size: int) -> Motion:
    direction = str(rng.choice(list(DIRECTIONS)))
    distance = size * 0.45
    margin = size * 0.15
    dx, dy = DIRECTIONS[direction]
    lo = [margin - min(0, d) * distance for d in (dx, dy)]
    hi = [size - margin - max(0, d) * distance for d in (dx, dy)]
    start = (float(rng.uniform(lo[0], hi[0])), float(rng.uniform(lo[1], hi[1])))
    return Motion(color, shape, direction, start, distance)


def centred_motion(rng: np.random.Generator, color: str, shape: str, size: int) -> Motion:
    """A motion along its direction's one path: through the centre, ``0.45 size`` long.
    The path of a direction is the reversed path of its opposite."""
    direction = str(rng.choice(list(DIRECTIONS)))
    distance = size * 0.45
    dx, dy = DIRECTIONS[direction]
    start = (size / 2 - dx * distance / 2, size / 2 - dy * distance / 2)
    return Motion(color, shape, direction, start, distance)


def group_clips(rng: np.random.Generator, size: int, steps: int,
                captions_per_clip: int = CAPTIONS_PER_CLIP, tier: str = "hard"):
    """The three (captions, pictures) variants of one group: reorderings of one picture set."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    motion = centred_motion if tier == "easy" else random_motion
    (c1, c2) = rng.choice(list(COLORS), size=2, replace=False)
    s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
    a = motion(rng, str(c1), str(s1), size)
    b = motion(rng, str(c2), str(s2), size)
    forward = render(a, b, size, steps, show_still=tier == "hard")
    return [
        (captions(a, b, rng, captions_per_clip), forward),
        (captions(b, a, rng, captions_per_clip), forward[steps:] + forward[:steps]),
        (captions(b.reversed(), a.reversed(), rng, captions_per_clip), forward[::-1]),
    ]


def generate(output: Path, train_groups: int, test_groups: int, val_groups: int = 0,
             seed: int = 0, size: int = 96, fps: int = 4, seconds_per_motion: int = 4,
             captions_per_clip: int = CAPTIONS_PER_CLIP, tier: str = "hard") -> Path:
    """Write the clips and ``manifest.csv``; returns the manifest path.

    A motion takes ``seconds_per_motion`` positions, each shown for one second
    (``fps`` identical frames); every clip gets ``captions_per_clip`` paraphrases.
    ``tier`` is ``hard`` or ``easy`` (the module's docstring says how they differ).
    """
    rng = np.random.default_rng(seed)
    splits = ["train"] * train_groups + ["val"] * val_groups + ["test"] * test_groups
    rows = []
    for g, split in enumerate(splits):
        for v, (texts, pictures) in enumerate(
                group_clips(rng, size, seconds_per_motion, captions_per_clip, tier)):
            video_id = f"g{g:04d}_v{v}"
            frames = [picture for picture in pictures for _ in range(fps)]
            path = write_video(output / "clips" / f"{video_id}.mp4", frames, fps)
            rows += [{"video_id": video_id, "uri": str(path.resolve()), "caption": text,
                      "split": split, "group": g} for text in texts]
    manifest = output / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder for clips/ and manifest.csv")
    parser.add_argument("--train-groups", type=int, default=134, help="groups of 3 for training")
    parser.add_argument("--val-groups", type=int, default=33,
                        help="groups of 3 for model selection")
    parser.add_argument("--test-groups", type=int, default=33, help="groups of 3 for testing")
    parser.add_argument("--seed", type=int, default=0, help="seed of shapes, motions and captions")
    parser.add_argument("--size", type=int, default=96, help="frame width and height, pixels")
    parser.add_argument("--fps", type=int, default=4, help="frame rate of the clips")
    parser.add_argument("--captions-per-clip", type=int, default=CAPTIONS_PER_CLIP,
                        help="different paraphrases of each clip")
    parser.add_argument("--seconds-per-motion", type=int, default=4,
                        help="positions of each motion, one second each")
    parser.add_argument("--tier", default="hard", choices=TIERS,
                        help="hard: both shapes on screen, motions start anywhere; easy: only "
                        "the moving shape on screen, one centred path per direction")
    args = parser.parse_args(argv)
    manifest = generate(Path(args.output), args.train_groups, args.test_groups, args.val_groups,
                        args.seed, args.size, args.fps, args.seconds_per_motion,
                        args.captions_per_clip, args.tier)
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
