"""Symmetric InfoNCE: hand-worked values, temperature clamp, multi-caption batches, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vtr_models.loss import ContrastiveLoss


def test_initial_scale_is_clip_temperature() -> None:
    loss_fn = ContrastiveLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert loss_fn.scale.item() == pytest.approx(1 / 0.07)
    assert not loss_fn.scale.requires_grad


def test_hand_worked_2x2_matches_manual_logsumexp() -> None:
    sim = torch.tensor([[0.3, 0.28], [0.0, 0.2]], dtype=torch.float64)
    ids = torch.tensor([7, 3])  # ids need not be 0..n-1; columns follow the ids
    loss = ContrastiveLoss()(sim, ids, ids)

    s = 1 / 0.07
    logits = s * sim
    # text -> video: per row, logsumexp over the row minus the diagonal entry
    t2v = ((torch.logsumexp(logits, dim=1) - logits.diagonal()).sum() / 2).item()
    # video -> text: per column, logsumexp over the column minus the diagonal entry
    v2t = ((torch.logsumexp(logits, dim=0) - logits.diagonal()).sum() / 2).item()
    # sim is not symmetric, so the two directions differ: a loss that used only one of them
    # (or the same one twice) would not match.
    # By hand, with s = 1/0.07 and softplus(x) = log(1 + e^x):
    #   rows:    softplus(-0.02 s) = 0.563, softplus(-0.2 s) = 0.056  -> t2v = 0.308
    #   columns: softplus(-0.3 s) = 0.014, softplus(+0.08 s) = 1.419  -> v2t = 0.717
    assert t2v == pytest.approx(0.308, abs=1e-3)
    assert v2t == pytest.approx(0.717, abs=1e-3)
    assert loss.item() == pytest.approx((t2v + v2t) / 2, rel=1e-6)


def test_column_order_does_not_matter_when_ids_follow_columns() -> None:
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 3, generator=gen)
    text_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    video_ids = torch.tensor([0, 1, 2])
    loss_fn = ContrastiveLoss()
    perm = torch.tensor([2, 0, 1])
    assert loss_fn(sim[:, perm], text_ids, video_ids[perm]).item() == pytest.approx(
        loss_fn(sim, text_ids, video_ids).item(), rel=1e-6
    )


def test_temperature_clamp_caps_scale_at_100() -> None:
    loss_fn = ContrastiveLoss()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)  # exp(10) ~ 22026, far above the cap
    assert loss_fn.scale.item() == pytest.approx(100.0)

    sim = torch.tensor([[0.05, 0.04], [0.03, 0.045]], dtype=torch.float64)
    ids = torch.tensor([0, 1])
    loss = loss_fn(sim, ids, ids)
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(100.0))

    logits = 100.0 * sim
    target = torch.arange(2)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # with the unclamped scale of ~22026 the loss would be very different
    unclamped = math.exp(10.0) * sim
    assert abs(F.cross_entropy(unclamped, target).item() - expected.item()) > 0.1


def test_duplicate_captions_of_a_video_are_not_negatives() -> None:
    # Video A (id 0) has two captions t0, t1, both perfect matches with it; video B (id 1)
    # has caption t2.
    sim = torch.tensor(
        [
            [1.0, 0.0],  # t0 -> A
            [1.0, 0.0],  # t1 -> A
            [0.0, 1.0],  # t2 -> B
        ],
        dtype=torch.float64,
    )
    text_ids = torch.tensor([0, 0, 1])
    video_ids = torch.tensor([0, 1])
    loss = ContrastiveLoss()(sim, text_ids, video_ids).item()

    s = 1 / 0.07
    e = math.exp
    # text -> video: every caption has 1 positive (score s) and 1 negative (score 0).
    t2v = -math.log(e(s) / (e(s) + 1))
    # video -> text, multi-positive: A puts mass 2e^s on its captions out of 2e^s + 1,
    # B puts e^s out of e^s + 2.
    v2t = (-math.log(2 * e(s) / (2 * e(s) + 1)) - math.log(e(s) / (e(s) + 2))) / 2
    multi_positive = (t2v + v2t) / 2
    assert loss == pytest.approx(multi_positive, rel=1e-5)

    # The naive CLIP loss, with the video repeated once per caption and the diagonal as the
    # only positives, makes t0 and t1 negatives of each other: each of A's captions then
    # competes with its sibling and that direction cannot go below log 2.
    square = sim[:, [0, 0, 1]]
    target = torch.arange(3)
    naive = (F.cross_entropy(s * square, target) + F.cross_entropy(s * square.t(), target)) / 2
    assert naive.item() > 0.4  # ~ (2/3) * log 2
    assert loss < 1e-3
    assert loss < naive.item() - 0.4


def test_gradients_reach_logit_scale_and_similarities() -> None:
    loss_fn = ContrastiveLoss()
    sim = torch.tensor([[0.6, 0.2, 0.1], [0.3, 0.5, 0.0], [0.1, 0.4, 0.2]], requires_grad=True)
    ids = torch.tensor([0, 1, 2])
    loss_fn(sim, ids, ids).backward()
    grad = loss_fn.logit_scale.grad
    assert grad is not None and torch.isfinite(grad) and grad.abs().item() > 0
    assert sim.grad is not None and sim.grad.abs().sum().item() > 0
    # raising the positives' similarity must lower the loss
    assert (sim.grad.diagonal() < 0).all()


def test_sgd_on_learnable_embeddings_lowers_the_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    text_emb = torch.nn.Parameter(torch.randn(8, 16, generator=gen))
    video_emb = torch.nn.Parameter(torch.randn(4, 16, generator=gen))
    text_ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # two captions per video
    video_ids = torch.arange(4)
    loss_fn = ContrastiveLoss()
    opt = torch.optim.SGD([text_emb, video_emb, *loss_fn.parameters()], lr=0.5)

    def step() -> float:
        sim = F.normalize(text_emb, dim=-1) @ F.normalize(video_emb, dim=-1).t()
        loss = loss_fn(sim, text_ids, video_ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    losses = [step() for _ in range(50)]
    assert losses[-1] < 0.1 * losses[0]
    assert loss_fn.scale.item() <= 100.0 + 1e-4


def test_invalid_batches_are_rejected() -> None:
    loss_fn = ContrastiveLoss()
    sim = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="unique"):
        loss_fn(sim, torch.tensor([0, 0, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="caption video id 5"):
        loss_fn(sim, torch.tensor([0, 1, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="video 1 has no caption"):
        loss_fn(sim, torch.tensor([0, 0, 0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="text_video_ids"):
        loss_fn(sim, torch.tensor([0, 1]), torch.tensor([0, 1]))
