"""Random and hard-negative batches of cached training pairs."""

from __future__ import annotations

import torch

from pipelines.training.batch_sampling import caption_neighbours, neighbour_batches, random_batches
from vtr_models.factory import create_inputs
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
