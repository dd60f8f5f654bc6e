"""Random and hard-negative batches of cached training pairs."""

from __future__ import annotations

import torch

from pipelines.training.batch_sampling import (
    caption_neighbours,
    neighbour_batches,
    random_batches,
    video_neighbours,
)
from pipelines.training.loop import CachedShard
from vtr_models.factory import create_inputs, create_model
from vtr_models.model_config import model_config

CAPTIONS = [
    "a red circle moves left, then a blue square moves up",
    "a blue square moves up, then a red circle moves left",
    "a green triangle moves down, then a white circle moves right",
    "a white circle moves right, then a green triangle moves down",
    "a man is cooking pasta in a kitchen",
    "a woman is cooking soup in a kitchen",
    "children play football in a park",
    "kids play soccer in the park",
]


def tokens() -> torch.Tensor:
    _, tokenizer = create_inputs(model_config("lfemi"))
    return tokenizer.captions(CAPTIONS)


def test_nearest_captions_share_their_words():
    neighbours = caption_neighbours(tokens(), count=1)
    assert neighbours[:, 0].tolist() == [1, 0, 3, 2, 5, 4, 7, 6]
    assert all(i not in row for i, row in enumerate(caption_neighbours(tokens(), 3).tolist()))


def test_neighbour_batches_keep_neighbourhoods_together_and_use_rows_once():
    neighbours = caption_neighbours(tokens(), count=1)
    for seed in range(5):
        batches = neighbour_batches(neighbours, 2, torch.Generator().manual_seed(seed))
        rows = torch.cat(batches).tolist()
        assert sorted(rows) == list(range(8))  # every row once
        assert sorted(sorted(b.tolist()) for b in batches) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    orders = {tuple(torch.cat(neighbour_batches(neighbours, 2, torch.Generator().manual_seed(s)))
                    .tolist()) for s in range(5)}
    assert len(orders) > 1  # a new order each epoch


def test_random_batches_drop_the_last_partial_batch():
    batches = random_batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4]
    assert len(set(torch.cat(batches).tolist())) == 8


def test_nearest_videos_give_a_row_of_each_and_embed_each_video_once():
    # rows 0-1 are video 7, 2-4 video 3, 5 video 9, 6-7 video 5
    keys = torch.tensor([7, 7, 3, 3, 3, 9, 5, 5])
    vectors = {7: [1.0, 0.0], 3: [0.9, 0.1], 9: [0.0, 1.0], 5: [0.1, 0.9]}
    calls = []

    def embed(rows: torch.Tensor) -> torch.Tensor:
        calls.append(rows.tolist())
        return torch.tensor([vectors[int(keys[r])] for r in rows]) * 3  # length is ignored

    seen = set()
    for seed in range(20):
        neighbours = video_neighbours(keys, embed, 1, torch.Generator().manual_seed(seed),
                                      encode_batch=3)
        nearest_key = {7: 3, 3: 7, 9: 5, 5: 9}
        assert [int(keys[n]) for n in neighbours[:, 0]] == [nearest_key[int(k)] for k in keys]
        seen |= set(neighbours[:2, 0].tolist())  # video 7's rows: a row of video 3
    assert seen == {2, 3, 4}  # any caption of the neighbour, not always the first
    assert all(len(c) <= 3 for c in calls)
    assert sorted(r for c in calls[:2] for r in c) == [0, 2, 5, 6]  # first rows, once each
    everyone = video_neighbours(keys, embed, 10, torch.Generator().manual_seed(0))
    assert everyone.shape == (8, 3)  # fewer videos than asked: every other video
    assert all(keys[i] not in keys[row] for i, row in enumerate(everyone.tolist()))


class Shard:
    """The part of a Ray Data shard that ``CachedShard`` reads."""

    def __init__(self, pairs: dict[str, torch.Tensor]) -> None:
        self.pairs = pairs

    def iter_torch_batches(self, batch_size: int, device: str):
        yield self.pairs


def test_an_untrained_model_mines_the_reorderings_of_a_clip_as_its_nearest_videos():
    """Clips made of the same pictures in another order, which only event order tells
    apart, are each other's neighbours by an untrained model's vectors (the mean frame
    feature), whatever their captions say; so their captions meet in a batch."""
    torch.manual_seed(0)
    model = create_model("lfemi")
    pictures = [torch.rand(4, 3, 64, 64) for _ in range(3)]  # three groups' picture sets
    orders = [[0, 1, 2, 3], [2, 3, 0, 1], [3, 2, 1, 0]]  # each group's three clips
    frames = torch.stack([p[o] for p in pictures for o in orders])  # videos 0-8
    captions = [f"clip {v} of a group" for v in range(9)]
    shard = CachedShard(Shard({
        "frames": frames, "frame_mask": torch.ones(9, 4, dtype=torch.bool),
        "tokens": model.tokenizer.captions(captions), "video_key": torch.arange(9)}),
        hard_negatives=2, by="videos")
    assert shard.neighbours is None  # mined each epoch, from the model as it stands
    shard.mine_videos(model.train(), batch_size=4, seed=0, device=torch.device("cpu"))
    assert model.training  # left as it was found: training
    groups = [sorted(int(n) // 3 for n in row) for row in shard.neighbours]
    assert groups == [[v // 3] * 2 for v in range(9)]
    batches = shard.batches(3, seed=1, device=torch.device("cpu"))
    assert all(len({int(k) // 3 for k in b["video_key"]}) == 1 for b in batches)
