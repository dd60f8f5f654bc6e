"""Seed 000's relational reasoning (vtr_models/relations.py) against plain-torch references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vtr_models import create_model
from vtr_models.relations import MultiScaleRelations, RelationalFusion, even_slots, neighbourhood_kl
from vtr_models.similarity import pairwise_cosine


def test_even_slots_read_evenly_spaced_positions_of_each_valid_run():
    features = torch.arange(2 * 10, dtype=torch.float).reshape(2, 10, 1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :8] = True  # frames: a run from 0
    mask[1, 1:4] = True  # words: a run from 1 (the start token left out), shorter than slots
    read = even_slots(features, mask, 4)[..., 0].tolist()
    assert read[0] == [1, 3, 5, 7]  # centres 0.5, 2.5, 4.5, 6.5 of 8 -> 1, 3, 5, 7
    assert read[1] == [11, 12, 12, 13]  # 3 words at 4 slots: 1 + floor(.375, 1.125, 1.875, 2.625)


def reference_relations(module: MultiScaleRelations, sequence: torch.Tensor) -> torch.Tensor:
    """TRN written out: for each scale k, g_k over every ordered k-subset of the slots
    (concatenated in time order), averaged, through h_k; summed over scales."""
    total = torch.zeros(sequence.shape[-1])
    for k, g, h in zip(module.scales, module.g, module.h, strict=True):
        outputs = [g(torch.cat([sequence[i] for i in group]))
                   for group in itertools.combinations(range(len(sequence)), k)]
        total = total + h(torch.stack(outputs).mean(0))
    return total


def test_multi_scale_relations_sum_scales_of_ordered_groups():
    torch.manual_seed(0)
    module = MultiScaleRelations(dim=6, slots=5, max_scale=4)
    features = torch.randn(3, 7, 6)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, :5], mask[1, :7], mask[2, 2:6] = True, True, True
    out = module(features, mask)
    slots = even_slots(features, mask, 5)
    for video in range(3):
        torch.testing.assert_close(out[video], reference_relations(module, slots[video]))
    assert [len(getattr(module, f"groups_{k}")) for k in module.scales] == [
        math.comb(5, k) for k in (2, 3, 4)]
    with pytest.raises(ValueError, match="max_scale"):
        MultiScaleRelations(dim=6, slots=3, max_scale=4)


def test_relations_tell_a_sequence_from_its_reverse_where_a_mean_cannot():
    torch.manual_seed(0)
    module = MultiScaleRelations(dim=8, slots=4, max_scale=3)
    forward = torch.randn(1, 4, 8)
    mask = torch.ones(1, 4, dtype=torch.bool)
    backward = forward.flip(1)
    assert torch.allclose(forward.mean(1), backward.mean(1))
    assert not torch.allclose(module(forward, mask), module(backward, mask), atol=1e-4)


def test_fusion_starts_as_its_base_and_ignores_padding():
    torch.manual_seed(0)
    fusion = RelationalFusion(dim=8, slots=4, max_scale=3)
    features, base = torch.randn(2, 6, 8), torch.randn(2, 8)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :4], mask[1, 1:6] = True, True
    torch.testing.assert_close(fusion(features, mask, base), base, atol=0, rtol=0)
    torch.nn.init.normal_(fusion.out.weight)  # open the fusion: padding must still not count
    garbage = features.clone()
    garbage[0, 4:] = 100.0
    garbage[1, 0] = -100.0
    torch.testing.assert_close(fusion(garbage, mask, base), fusion(features, mask, base))


def test_neighbourhood_kl_is_its_definition():
    torch.manual_seed(0)
    text, video = torch.randn(5, 4), torch.randn(5, 4)
    temperature = 0.5

    def neighbours(x: torch.Tensor) -> list[torch.Tensor]:
        x = F.normalize(x, dim=-1)
        rows = []
        for i in range(len(x)):
            logits = torch.stack([x[i] @ x[j] / temperature for j in range(len(x)) if j != i])
            rows.append(torch.softmax(logits, 0))
        return rows

    p_t, p_v = neighbours(text), neighbours(video)
    kl = sum((pv * (pv / pt).log()).sum() + (pt * (pt / pv).log()).sum()
             for pt, pv in zip(p_t, p_v, strict=True)) / (2 * len(text))
    torch.testing.assert_close(neighbourhood_kl(text, video, temperature), kl)
    assert neighbourhood_kl(video, video).abs() < 1e-6  # one space agrees with itself
    assert neighbourhood_kl(text[:2], video[:2]) == 0  # no distribution over one other


def test_rrn_trains_its_relations_and_alignment_and_scores_order():
    """The relation term's gate opens, the alignment loss reaches both fusions, and an
    opened rrn scores a reversed clip differently from the clip."""
    torch.manual_seed(0)
    model = create_model("rrn").train()
    size = model.backbone.clip.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    frames = torch.randn(4, 6, 3, size, size)
    mask = torch.ones(4, 6, dtype=torch.bool)
    tokens = model.tokenizer.captions(["a b c", "d e f", "g h i", "j k l"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.arange(4)
    for _ in range(3):
        text, video = model(frames, mask, tokens)
        loss = model.loss(model.score(text, video), ids, ids) + model.auxiliary_loss(text, video)
        optimizer.zero_grad()
        loss.backward()
        assert model.video_relations.out.weight.grad is not None
        optimizer.step()
    assert model.relation_gate.item() != 0
    kl_only = model.auxiliary_loss(*model(frames, mask, tokens))
    kl_only.backward()
    for fusion in (model.video_relations, model.text_relations):
        assert fusion.relations.g[0][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        text = model.encode_text(tokens)
        fused_text = model.text_vectors(text)[0]
        forward = pairwise_cosine(fused_text,
                                  model.video_vectors(model.encode_video(frames, mask))[0])
        backward = pairwise_cosine(
            fused_text, model.video_vectors(model.encode_video(frames.flip(1), mask))[0])
    assert not torch.allclose(forward, backward, atol=1e-5)
