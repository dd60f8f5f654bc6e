"""Where in a video a caption matches: per-frame evidence and the best span of seconds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vtr_models import TextFeatures, VideoFeatures, create_model, even_indices
from vtr_models.moments import best_moment, frame_evidence, frame_times


def test_the_span_is_the_run_of_strong_frames_around_the_best():
    times = [float(t) for t in range(10)]  # 1 fps, a 10.4 s video
    evidence = torch.tensor([0.1, 0.1, 0.3, 0.8, 0.9, 0.7, 0.1, 0.6, 0.1, 0.1])
    moment = best_moment(evidence, times, duration_s=10.4)
    # worst 0.1, level 0.1 + 0.1 * (0.9 - 0.1) = 0.18: frames 2..5; frame 7 (0.6) is
    # above it but apart from the run
    assert (moment.start_s, moment.end_s) == (2.0, 6.0)
    assert moment.score == pytest.approx(0.675)
    last = best_moment(torch.tensor([0.0, 0.05, 1.0]), [0.0, 1.0, 2.0], duration_s=2.6)
    assert (last.start_s, last.end_s) == (2.0, 2.6)  # the last frame lasts to the end
    padded = torch.tensor([0.2, 0.9, -math.inf, -math.inf])
    assert best_moment(padded, [0.0, 5.0], duration_s=9.0) == pytest.approx(
        best_moment(padded[:2], [0.0, 5.0], duration_s=9.0))
    one = best_moment(torch.tensor([0.3]), [0.0], duration_s=0.5)
    assert (one.start_s, one.end_s, one.score) == (0.0, 0.5, pytest.approx(0.3))
    with pytest.raises(ValueError, match="at least one frame"):
        best_moment(torch.tensor([-math.inf]), [], duration_s=1.0)


def test_frame_times_follow_the_models_thinning_of_stored_frames():
    stored = [0.5 * i for i in range(30)]
    kept = frame_times(stored, model_frames=12, max_frames=12)
    assert kept == [stored[i] for i in even_indices(30, 12)] and kept[-1] == stored[-1]
    assert frame_times(stored[:5], model_frames=5, max_frames=12) == stored[:5]


def features(words: torch.Tensor, frames: torch.Tensor) -> tuple[TextFeatures, VideoFeatures]:
    text = TextFeatures(words.mean(0, keepdim=True), words[None], torch.ones(1, len(words),
                                                                            dtype=torch.bool))
    mask = torch.ones(1, len(frames), dtype=torch.bool)
    video = VideoFeatures.of_frames(frames[None], F.normalize(frames, dim=-1)[None], mask)
    return text, video


@pytest.mark.parametrize("model", ["lfemi", "meanp"])
def test_the_frames_that_show_the_words_are_the_moment(model):
    """Frames 4-6 of 10 show what the caption's words say, the rest something else: the
    evidence peaks there and the moment is those seconds, through the fine term's
    word-to-frame cosines (lfemi) or the caption's cosine with each frame (meanp)."""
    torch.manual_seed(0)
    retrieval = create_model(model, max_frames=10)
    dim = 16
    said, other = torch.randn(dim), torch.randn(dim)
    words = torch.stack([said + 0.1 * torch.randn(dim) for _ in range(3)])
    frames = torch.stack([said if 4 <= t <= 6 else other for t in range(10)])
    frames = frames + 0.05 * torch.randn(10, dim)
    text, video = features(words, frames)
    evidence = frame_evidence(retrieval, text, video)
    assert evidence.shape == (1, 1, 10)
    assert set(evidence[0, 0].topk(3).indices.tolist()) == {4, 5, 6}
    moment = best_moment(evidence[0, 0], [float(t) for t in range(10)], duration_s=10.0)
    assert (moment.start_s, moment.end_s) == (4.0, 7.0)
    padded = VideoFeatures.of_frames(video.frames, video.local, torch.arange(10)[None] < 8)
    assert torch.isinf(frame_evidence(retrieval, text, padded)[0, 0, 8:]).all()
