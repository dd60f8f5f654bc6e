"""Seed 004's pre-training tasks: the tag replacement, the word masking, and the heads' losses
reaching both towers."""

from __future__ import annotations

import pytest
import torch

from vtr_models import create_model
from vtr_models.pretraining import PretrainingHeads, mask_words, replace_tags


def test_tags_are_replaced_by_another_rows_at_half_the_rate():
    tags = torch.eye(400)  # every row's tags differ from every other's
    tags[1] = tags[0]  # ... but rows 0 and 1 carry the same tags
    shown, replaced = replace_tags(tags, torch.Generator().manual_seed(0))
    changed = (shown != tags).any(dim=1)
    assert torch.equal(replaced, changed.float())
    assert 0.44 < replaced.mean() < 0.56
    for row, original in zip(shown[changed], tags[changed], strict=True):
        assert row.sum() == 1 and not torch.equal(row, original)  # another row's tags
    kept = ~changed
    assert torch.equal(shown[kept], tags[kept])
    same = torch.stack([tags[0], tags[0]])  # a replacement by equal tags is not one
    assert replace_tags(same, torch.Generator().manual_seed(1), rate=1.0)[1].tolist() == [0, 0]


def test_masking_hides_a_seventh_of_the_words_and_never_the_special_tokens():
    model = create_model("meanp")
    tokens = model.tokenizer.captions(
        ["a red circle slides to the left then a blue square goes up and down"] * 200
        + ["go"])
    sot = int(tokens[0, 0])
    masked, targets = mask_words(tokens, sot, torch.Generator().manual_seed(0))
    chosen = targets != -100
    eot = tokens.argmax(dim=1)
    positions = torch.arange(tokens.shape[1])
    words = (positions[None] >= 1) & (positions[None] < eot[:, None])
    assert not (chosen & ~words).any()  # never the start, the end or the padding
    assert torch.equal(targets[chosen], tokens[chosen])
    assert torch.equal(masked[chosen], torch.full_like(tokens[chosen], sot))
    assert torch.equal(masked[~chosen], tokens[~chosen])
    assert chosen.any(dim=1).all()  # every caption masks at least one word (the last: one)
    assert 0.12 < chosen[:200].sum() / words[:200].sum() < 0.18


def test_the_heads_train_both_towers_and_refuse_what_they_cannot_do():
    torch.manual_seed(0)
    model = create_model("meanp")
    heads = PretrainingHeads(model.backbone.embed_dim, ("tap", "mlm"), tags=6,
                             vocab_size=model.backbone.clip.token_embedding.num_embeddings)
    tokens = model.tokenizer.captions(["a red circle slides left", "a blue square goes up"] * 2)
    video = model.encode_video(torch.randn(4, 3, 3, 64, 64), torch.ones(4, 3, dtype=torch.bool))
    tags = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 1, 0, 1, 0, 0]] * 2, dtype=torch.float)
    loss = heads.loss(model, video, tokens, tags, torch.Generator().manual_seed(0))
    loss.backward()
    visual = model.backbone.clip.visual.conv1.weight.grad
    text = model.backbone.clip.token_embedding.weight.grad
    assert visual is not None and visual.abs().sum() > 0
    assert text is not None and text.abs().sum() > 0
    assert heads.tag_embedding.grad.abs().sum() > 0 and heads.mlm.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs tags"):
        PretrainingHeads(8, ("tap",))
    with pytest.raises(ValueError, match="unknown pre-training task"):
        PretrainingHeads(8, ("caption",))
