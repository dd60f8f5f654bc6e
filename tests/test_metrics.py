"""Retrieval metrics checked against hand-computed ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtr_models.metrics import retrieval_metrics, target_rank

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
    # t0: own a = 0.3; higher: 0.6, 0.5                     -> rank 3
    # t1: own a = 0.8; nothing higher                       -> rank 1
    # t2: own b = 0.4; higher: 0.9; a = 0.4 is a tie, which
    #     counts against the query                          -> rank 3 (optimistic: 2)
    # t3: own c = 0.2; higher: 0.7                          -> rank 2
    # ranks [3, 1, 3, 2]: R@1 = 1/4 = 25 %, R@5 = R@10 = 100 %,
    # MdR = median(1, 2, 3, 3) = 2.5, MnR = 9 / 4 = 2.25.
    t2v = retrieval_metrics(np.array(SIM), TEXT_VIDEO_IDS, VIDEO_IDS)["t2v"]
    assert t2v == pytest.approx(
        {"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.5, "MnR": 2.25}
    )
    # The old, optimistic convention: ranks [3, 1, 2, 2], MdR = 2, MnR = 2.
    optimistic = retrieval_metrics(np.array(SIM), TEXT_VIDEO_IDS, VIDEO_IDS, ties="optimistic")
    assert optimistic["t2v"] == pytest.approx(
        {"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.0}
    )


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


def test_equal_scores_get_no_credit() -> None:
    # A model that scores every candidate equally: every other candidate ties the target, so
    # every rank is N (5 videos, one caption each) and R@1 is 0, both ways.
    ids = list(range(5))
    out = retrieval_metrics(torch.full((5, 5), 0.25), ids, ids)
    worst = {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "MdR": 5.0, "MnR": 5.0}
    assert out == {"t2v": worst, "v2t": worst}
    # The optimistic convention calls the same model perfect.
    perfect = {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 1.0}
    optimistic = retrieval_metrics(torch.zeros(5, 5), ids, ids, ties="optimistic")
    assert optimistic == {"t2v": perfect, "v2t": perfect}


def test_two_way_tie_at_the_top_is_a_miss_unless_optimistic() -> None:
    ids = ["a", "b", "c"]
    # caption 0 (of a) ties a with b at the top; captions 1 and 2 win strictly.
    sim = torch.tensor([[0.9, 0.9, 0.1], [0.2, 0.8, 0.3], [0.1, 0.2, 0.7]])
    against = retrieval_metrics(sim, ids, ids)
    optimistic = retrieval_metrics(sim, ids, ids, ties="optimistic")
    # t2v ranks: against [2, 1, 1], optimistic [1, 1, 1].
    assert against["t2v"]["R@1"] == pytest.approx(200 / 3)
    assert against["t2v"]["MnR"] == pytest.approx(4 / 3)
    assert optimistic["t2v"]["R@1"] == 100.0
    # v2t: column a = [0.9, 0.2, 0.1] -> rank 1; column b = [0.9, 0.8, 0.2]: caption 0 (of a)
    # beats b's own caption -> rank 2 either way; column c = [0.1, 0.3, 0.7] -> rank 1.
    assert against["v2t"]["R@1"] == optimistic["v2t"]["R@1"] == pytest.approx(200 / 3)
    # Now make caption 0 tie b's own caption in column b: a miss, unless optimistic.
    sim[0, 1] = 0.8
    assert retrieval_metrics(sim, ids, ids)["v2t"]["R@1"] == pytest.approx(200 / 3)
    assert retrieval_metrics(sim, ids, ids, ties="optimistic")["v2t"]["R@1"] == 100.0


def test_strict_win_is_a_hit_under_both_conventions() -> None:
    ids = ["a", "b"]
    sim = torch.tensor([[0.50001, 0.5], [0.5, 0.50001]])
    for ties in ("against", "optimistic"):
        out = retrieval_metrics(sim, ids, ids, ties=ties)
        assert out["t2v"]["R@1"] == out["v2t"]["R@1"] == 100.0


def test_several_captions_per_video_with_ties() -> None:
    # Video a has captions 0 and 1, video b has caption 2.
    text_ids, video_ids = ["a", "a", "b"], ["a", "b"]
    # Column a = [0.9, 0.9, 0.2]: a's two captions tie each other at the top, and captions of
    # the same video never count against it -> rank 1 either way.
    # Column b = [0.4, 0.3, 0.4]: b's caption (0.4) ties caption 0 of a -> rank 2 against,
    # rank 1 optimistic.
    sim = torch.tensor([[0.9, 0.4], [0.9, 0.3], [0.2, 0.4]])
    against = retrieval_metrics(sim, text_ids, video_ids)
    assert against["v2t"] == pytest.approx(
        {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "MdR": 1.5, "MnR": 1.5}
    )
    optimistic = retrieval_metrics(sim, text_ids, video_ids, ties="optimistic")
    assert optimistic["v2t"]["R@1"] == 100.0
    # t2v: rows [0.9, 0.4], [0.9, 0.3], [0.2, 0.4]: every caption's own video wins strictly.
    assert against["t2v"]["R@1"] == 100.0
    # Caption 1 of a now ties a with b ([0.9, 0.9]): a miss against, a hit optimistic.
    sim[1, 1] = 0.9
    assert retrieval_metrics(sim, text_ids, video_ids)["t2v"]["R@1"] == pytest.approx(200 / 3)
    assert retrieval_metrics(sim, text_ids, video_ids, ties="optimistic")["t2v"]["R@1"] == 100.0


def test_unknown_ties_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(torch.tensor(SIM), TEXT_VIDEO_IDS, VIDEO_IDS, ties="pessimistic")
    with pytest.raises(ValueError, match="ties"):
        target_rank(torch.zeros(2, 2), torch.eye(2, dtype=torch.bool), ties="random")


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


def _reference_loop(
    sim: np.ndarray, text_ids: list[int], video_ids: list[int], ties: str
) -> dict:
    """A slow, obvious implementation to compare the vectorised one with."""
    rivals = np.greater_equal if ties == "against" else np.greater
    col = {v: j for j, v in enumerate(video_ids)}
    t2v = [
        1 + sum(bool(rivals(sim[i, j], sim[i, col[t]])) for j in col.values() if j != col[t])
        for i, t in enumerate(text_ids)
    ]
    v2t = []
    for j, v in enumerate(video_ids):
        own = [i for i, t in enumerate(text_ids) if t == v]
        others = [i for i, t in enumerate(text_ids) if t != v]
        v2t.append(min(1 + sum(bool(rivals(sim[k, j], sim[i, j])) for k in others) for i in own))

    def summary(ranks: list[int]) -> dict:
        r = np.array(ranks)
        recalls = {f"R@{k}": 100.0 * float(np.mean(r <= k)) for k in (1, 5, 10)}
        return {**recalls, "MdR": float(np.median(r)), "MnR": float(r.mean())}

    return {"t2v": summary(t2v), "v2t": summary(v2t)}


@pytest.mark.parametrize("ties", ["against", "optimistic"])
def test_matches_reference_loop_on_random_data(ties: str) -> None:
    rng = np.random.default_rng(1)
    video_ids = list(range(40))
    text_ids = video_ids + rng.integers(0, 40, size=60).tolist()
    # rounded scores so that ties occur
    sim = np.round(rng.normal(size=(len(text_ids), 40)), 1)
    got = retrieval_metrics(sim, text_ids, video_ids, ties=ties)
    expected = _reference_loop(sim, text_ids, video_ids, ties)
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


# benchmarks/within_group.py: the synthetic benchmark's error breakdown, same tie rule.

GROUP_VIDEOS = ["g0_v0", "g0_v1", "g0_v2", "g1_v0", "g1_v1", "g1_v2"]


@pytest.fixture
def breakdown(benchmark):
    return benchmark("within_group").breakdown


def test_within_group_twins_with_equal_scores_get_no_credit(breakdown) -> None:
    # One caption per clip of group g0; the three twins score equally, group g1 lower.
    sim = torch.tensor([[0.5, 0.5, 0.5, 0.1, 0.1, 0.1]] * 3)
    out = breakdown(sim, GROUP_VIDEOS[:3], GROUP_VIDEOS)
    assert out == {"R@1": 0.0, "top1_in_group": 100.0, "within_group_accuracy": 0.0}
    # A clip of another group tying the maximum: the top-1 is not surely in the group.
    sim[:, 3] = 0.5
    assert breakdown(sim, GROUP_VIDEOS[:3], GROUP_VIDEOS)["top1_in_group"] == 0.0


def test_within_group_strictly_better_own_clip_is_a_hit(breakdown) -> None:
    sim = torch.tensor([[0.5, 0.5, 0.5, 0.1, 0.1, 0.1]] * 3) + 0.01 * torch.eye(3, 6)
    out = breakdown(sim, GROUP_VIDEOS[:3], GROUP_VIDEOS)
    assert out == {"R@1": 100.0, "top1_in_group": 100.0, "within_group_accuracy": 100.0}


def test_within_group_r1_equals_metrics_t2v_r1(breakdown) -> None:
    gen = torch.Generator().manual_seed(3)
    videos = [f"g{g}_v{v}" for g in range(10) for v in range(3)]
    texts = videos + [videos[i] for i in torch.randint(0, 30, (20,), generator=gen).tolist()]
    own = torch.tensor([videos.index(t) for t in texts])
    sim = torch.randn(len(texts), len(videos), generator=gen)
    sim[torch.arange(len(texts)), own] += 1.5
    sim = torch.round(sim, decimals=0)  # coarse scores, so that own clips tie at the top
    expected = retrieval_metrics(sim, texts, videos)["t2v"]["R@1"]
    assert breakdown(sim, texts, videos)["R@1"] == pytest.approx(expected)
    optimistic = retrieval_metrics(sim, texts, videos, ties="optimistic")["t2v"]["R@1"]
    assert 0.0 < expected < optimistic  # some hits, and some top ties that now count as misses
