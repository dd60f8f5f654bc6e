"""benchmarks/order_oracles.py: its text oracle reads every wording back to the motions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.sources.synthetic import captions, random_motion


@pytest.fixture
def oracles(benchmark):
    return benchmark("order_oracles")


def test_every_wording_parses_to_the_motions_in_the_order_they_happen(oracles) -> None:
    rng = np.random.default_rng(0)
    said_first = set()
    for _ in range(200):
        first = random_motion(rng, "red", "circle", 96)
        second = random_motion(rng, "blue", "triangle", 96)
        expected = [oracles.WORDS.index(w) for m in (first, second)
                    for w in (m.color, m.shape, m.direction)]
        for text in captions(first, second, rng):
            assert oracles.motions(text) == expected, text
            said_first.add("red" if text.index("red") < text.index("blue") else "blue")
    assert said_first == {"red", "blue"}  # wordings that say either motion first were read


def test_a_caption_of_another_dataset_is_refused(oracles) -> None:
    with pytest.raises(ValueError, match="not a synthetic benchmark caption"):
        oracles.motions("a dog catches a frisbee on the beach")


def test_the_oracles_replace_the_encoders_and_train(oracles) -> None:
    from vtr_models import create_model, optimizer_groups

    model = create_model("lfemi", backbone="vtr-tiny").eval()
    oracles.use_frame_oracle(model)
    frames, mask = torch.rand(2, 3, 3, 64, 64), torch.ones(2, 3, dtype=torch.bool)
    pooled = model.encode_video(frames, mask).pooled
    assert torch.allclose(pooled, model.temporal(model.frame_oracle(frames, mask), mask).mean(1))
    trained = {id(p) for group in optimizer_groups(model, model.backbone, 1e-4, 1e-4, 0.2)
               for p in group["params"]}
    assert all(id(p) in trained for p in model.frame_oracle.parameters())
