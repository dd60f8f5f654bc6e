"""Retrieval metrics checked against hand-computed ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtr_models.metrics import retrieval_metrics

# 3 videos, 4 captions; video "a" has two captions (t0, t1).
VIDEO_IDS = ["a", "b", "c"]
TEXT_VIDEO_IDS = ["a", "a", "b", "c"]
SIM = [
    #  a    b    c
    [0.3, 0.6, 0.5],  # t0 -> a
    [0.8, 0.2, 0.1],  # t1 -> a
    [0.4, 0.4, 0.9],  # t2 -> b  (ties with a)
    [0.7, 0.1, 0.2],  # t3 -> c
]


def test_hand_worked_text_to_video() -> None:
    # t0: own a = 0.3; strictly higher: 0.6, 0.5          -> rank 3
    # t1: own a = 0.8; nothing higher                      -> rank 1
    # t2: own b = 0.4; higher: 0.9; a = 0.4 is a tie,
    #     which does not count (optimistic)                 -> rank 2 (pessimistic would be 3)
    # t3: own c = 0.2; higher: 0.7                          -> rank 2
    # ranks [3, 1, 2, 2]: R@1 = 1/4 = 25 %, R@5 = R@10 = 100 %,
    # MdR = median(1, 2, 2, 3) = 2, MnR = 8 / 4 = 2.
    t2v = retrieval_metrics(np.array(SIM), TEXT_VIDEO_IDS, VIDEO_IDS)["t2v"]
    assert t2v == pytest.approx({"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.0})


def test_hand_worked_video_to_text_uses_best_caption_rank() -> None:
    # column a = [0.3, 0.8, 0.4, 0.7]; own captions t0 (0.3) and t1 (0.8).
    #   t0 would rank 4 (0.8, 0.4, 0.7 higher), t1 ranks 1 -> best = 1
    #   (a "first caption" rule would give 4, a mean over captions 2.5).
    # column b = [0.6, 0.2, 0.4, 0.1]; own t2 (0.4); higher: 0.6 -> rank 2
    # column c = [0.5, 0.1, 0.9, 0.2]; own t3 (0.2); higher: 0.5, 0.9 -> rank 3
    # ranks [1, 2, 3]: R@1 = 100/3 %, R@5 = R@10 = 100 %, MdR = 2, MnR = 6 / 3 = 2.
    v2t = retrieval_metrics(torch.tensor(SIM), TEXT_VIDEO_IDS, VIDEO_IDS)["v2t"]
    assert v2t == pytest.approx(
        {"R@1": 100.0 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.0}
    )


def test_ties_are_broken_optimistically() -> None:
    # Every score equal: nothing is strictly higher than anything, so every rank is 1.
    sim = torch.zeros(4, 3)
    out = retrieval_metrics(sim, TEXT_VIDEO_IDS, VIDEO_IDS)
    for direction in ("t2v", "v2t"):
        assert out[direction]["R@1"] == 100.0
        assert out[direction]["MnR"] == 1.0


def _sim_with_ranks(ranks: list[int]) -> torch.Tensor:
    """A square sim where caption i (of video i) finds its own video at rank ``ranks[i]``."""
    n = len(ranks)
    sim = torch.empty(n, n)
    for i, rank in enumerate(ranks):
        others = [j for j in range(n) if j != i]
        order = others[: rank - 1] + [i] + others[rank - 1 :]  # columns, best first
        for position, j in enumerate(order):
            sim[i, j] = float(n - position)
    return sim


def test_recall_at_5_and_10_and_even_median() -> None:
    ranks = [1, 2, 5, 6, 10, 11, 1, 1, 3, 12, 7, 4]
    # R@1: three 1s -> 3/12 = 25 %
    # R@5: {1, 2, 5, 1, 1, 3, 4} -> 7/12 = 58.33 %
    # R@10: those 7 plus {6, 10, 7} -> 10/12 = 83.33 %
    # sorted: 1 1 1 2 3 4 | 5 6 7 10 11 12 -> MdR = (4 + 5) / 2 = 4.5 (mean of middle two)
    # MnR = 63 / 12 = 5.25
    sim = _sim_with_ranks(ranks)
    ids = list(range(12))
    t2v = retrieval_metrics(sim, ids, ids)["t2v"]
    assert t2v == pytest.approx(
        {"R@1": 25.0, "R@5": 700 / 12, "R@10": 1000 / 12, "MdR": 4.5, "MnR": 5.25}
    )


def test_identity_similarity_is_perfect_both_ways() -> None:
    ids = [10, 11, 12, 13, 14]
    out = retrieval_metrics(torch.eye(5), ids, ids)
    perfect = {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
    assert out == {"t2v": perfect, "v2t": perfect}


def test_metrics_do_not_depend_on_column_or_row_order() -> None:
    gen = torch.Generator().manual_seed(0)
    num_videos = 15
    video_ids = torch.arange(100, 100 + num_videos)
    # every video gets at least one caption, some get more
    text_video_ids = torch.cat(
        [video_ids, video_ids[torch.randint(0, num_videos, (10,), generator=gen)]]
    )
    sim = torch.randn(len(text_video_ids), num_videos, generator=gen)
    reference = retrieval_metrics(sim, text_video_ids, video_ids)
    assert reference["t2v"]["R@1"] < 100.0  # random scores: the test is not trivially perfect

    col_perm = torch.randperm(num_videos, generator=gen)
    row_perm = torch.randperm(len(text_video_ids), generator=gen)
    permuted = retrieval_metrics(
        sim[row_perm][:, col_perm], text_video_ids[row_perm], video_ids[col_perm]
    )
    assert permuted == reference

    # Permuting the columns while keeping the ids in their old order must change the answer:
    # this checks that ids, not positions, decide which column is correct.
    shifted = torch.roll(torch.arange(num_videos), 1)
    assert retrieval_metrics(sim[:, shifted], text_video_ids, video_ids) != reference


def _reference_loop(sim: np.ndarray, text_ids: list[int], video_ids: list[int]) -> dict:
    """A slow, obvious implementation to compare the vectorised one with."""
    col = {v: j for j, v in enumerate(video_ids)}
    t2v = [1 + int((sim[i] > sim[i, col[t]]).sum()) for i, t in enumerate(text_ids)]
    v2t = []
    for j, v in enumerate(video_ids):
        own = [i for i, t in enumerate(text_ids) if t == v]
        v2t.append(min(1 + int((sim[:, j] > sim[i, j]).sum()) for i in own))

    def summary(ranks: list[int]) -> dict:
        r = np.array(ranks)
        recalls = {f"R@{k}": 100.0 * float(np.mean(r <= k)) for k in (1, 5, 10)}
        return {**recalls, "MdR": float(np.median(r)), "MnR": float(r.mean())}

    return {"t2v": summary(t2v), "v2t": summary(v2t)}


def test_matches_reference_loop_on_random_data() -> None:
    rng = np.random.default_rng(1)
    video_ids = list(range(40))
    text_ids = video_ids + rng.integers(0, 40, size=60).tolist()
    # rounded scores so that ties occur
    sim = np.round(rng.normal(size=(len(text_ids), 40)), 1)
    got = retrieval_metrics(sim, text_ids, video_ids)
    expected = _reference_loop(sim, text_ids, video_ids)
    for direction in ("t2v", "v2t"):
        assert got[direction] == pytest.approx(expected[direction])


def test_large_matrix_runs() -> None:
    gen = torch.Generator().manual_seed(2)
    n = 1000
    sim = torch.randn(n, n, generator=gen) + 3 * torch.eye(n)
    out = retrieval_metrics(sim, np.arange(n), np.arange(n))
    # a 3-sigma boost to the diagonal: well above chance (0.1 %) but not perfect
    assert 10.0 < out["t2v"]["R@1"] < 100.0
    assert 10.0 < out["v2t"]["R@1"] < 100.0


def test_unknown_caption_video_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="'z'"):
        retrieval_metrics(torch.tensor(SIM), ["a", "a", "b", "z"], VIDEO_IDS)


def test_video_without_caption_is_an_error() -> None:
    with pytest.raises(ValueError, match="video 'c' has no caption"):
        retrieval_metrics(torch.tensor(SIM), ["a", "a", "b", "b"], VIDEO_IDS)


def test_duplicate_video_ids_and_shape_mismatch_are_errors() -> None:
    with pytest.raises(ValueError, match="unique"):
        retrieval_metrics(torch.tensor(SIM), TEXT_VIDEO_IDS, ["a", "b", "a"])
    with pytest.raises(ValueError, match="rows"):
        retrieval_metrics(torch.tensor(SIM), TEXT_VIDEO_IDS[:3], VIDEO_IDS)
    with pytest.raises(ValueError, match="columns"):
        retrieval_metrics(torch.tensor(SIM), TEXT_VIDEO_IDS, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.full((4, 3), float("nan")), TEXT_VIDEO_IDS, VIDEO_IDS)
