"""docs/method.md's formulas, each recomputed in plain torch from the module's own weights.

Every reference below works one caption / one video at a time and keeps only the
valid frames, words and keywords (``x[mask]``), so masking is checked by construction:
padded slots hold large garbage that must never reach an output. Dropout is off (eval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import wake

from pipelines.training.loop import contrastive_step
from vtr_models.factory import create_model
from vtr_models.retrieval_model import TextFeatures, VideoFeatures
from vtr_models.similarity import fine_grained
from vtr_models.temporal_encoder import TemporalEncoder
from vtr_models.text_enhancement import TextLocalEnhancement
from vtr_models.video_enhancement import VideoLocalEnhancement

TIGHT = {"atol": 1e-5, "rtol": 1e-5}
CAPTIONS = ["a red circle moves left", "a blue square jumps", "two dogs run"]
KEYWORDS = [["red circle", "move left"], ["blue square"], []]  # the last has no keywords


# ---- plain-torch references -------------------------------------------------------------

def linear(x, layer):
    return x @ layer.weight.T + layer.bias


def layer_norm(x, norm):
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def attention(query, key, value, heads, wq, bq, wk, bk, wv, bv, wo, bo):
    """softmax(Q K^T / sqrt(dh)) V per head, heads concatenated, output projection."""
    lq, d = query.shape
    dh = d // heads
    q = (query @ wq.T + bq).view(lq, heads, dh)
    k = (key @ wk.T + bk).view(-1, heads, dh)
    v = (value @ wv.T + bv).view(-1, heads, dh)
    weights = (torch.einsum("qhe,khe->hqk", q, k) / math.sqrt(dh)).softmax(dim=-1)
    return torch.einsum("hqk,khe->qhe", weights, v).reshape(lq, d) @ wo.T + bo


def mha(query, key, value, layer):
    """``nn.MultiheadAttention`` from its packed in-projection."""
    wq, wk, wv = layer.in_proj_weight.chunk(3)
    bq, bk, bv = layer.in_proj_bias.chunk(3)
    return attention(query, key, value, layer.num_heads, wq, bq, wk, bk, wv, bv,
                     layer.out_proj.weight, layer.out_proj.bias)


def ref_temporal(encoder, frames, mask):
    """S2: F' = F + Z(Transformer(F + P)) (post-norm layers), over valid frames only."""
    out = torch.zeros_like(frames)
    for b in range(frames.shape[0]):
        f = frames[b][mask[b]]
        x = f + encoder.position.weight[: len(f)]
        for layer in encoder.transformer.layers:
            x = layer_norm(x + mha(x, x, x, layer.self_attn), layer.norm1)
            x = layer_norm(x + linear(torch.relu(linear(x, layer.linear1)), layer.linear2),
                           layer.norm2)
        out[b][mask[b]] = f + linear(x, encoder.out)
    return out


def ref_lstm(lstm, x):
    """One-layer LSTM, gates in PyTorch's order (input, forget, cell, output)."""
    h = c = x.new_zeros(lstm.hidden_size)
    outputs = []
    for x_t in x:
        gates = (x_t @ lstm.weight_ih_l0.T + lstm.bias_ih_l0
                 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0)
        i, f, g, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs)


def ref_video_enhancement(module, frames, mask):
    """S2: v_g = mean of valid F'; fused = LSTM([F'_i ; v_g]);
    weight = 2 sigmoid(FC(SelfAttn(relu(FC(fused))))); V_e = unit(F' + Z fused) * weight
    (the residual, the range of the weight and the unit vector are the code's documented
    choices)."""
    out = torch.zeros_like(frames)
    for b in range(frames.shape[0]):
        f = frames[b][mask[b]]
        v_g = f.mean(dim=0)
        fused = ref_lstm(module.lstm, torch.cat([f, v_g.expand_as(f)], dim=-1))
        h = torch.relu(linear(fused, module.weights.fc1))
        h = mha(h, h, h, module.weights.attention)
        weight = 2 * torch.sigmoid(linear(h, module.weights.fc2))  # [n, 1]
        local = f + linear(fused, module.out)
        out[b][mask[b]] = local / local.norm(dim=-1, keepdim=True) * weight
    return out


def ref_text_enhancement(module, words, keywords, keyword_mask):
    """S3: W_e = W + tanh(g) CrossAttn(Q = W, K = V = valid keywords); no keywords: W_e = W."""
    out = words.clone()
    for b in range(words.shape[0]):
        kw = keywords[b][keyword_mask[b]]
        if len(kw):
            out[b] = words[b] + torch.tanh(module.gate) * mha(words[b], kw, kw, module.attention)
    return out


def ref_pooling(layer, text, frames, mask):
    """S4 (X-Pool's layer as a residual on the mean): v_t = mean(F') + out(a + proj(a)),
    a = CrossAttn(Q = LN_in(t), K = V = LN_in(F')) per (text, video) pair."""
    pooled = text.new_zeros(len(text), len(frames), text.shape[-1])
    eye = torch.eye(text.shape[-1])
    for a in range(len(text)):
        for b in range(len(frames)):
            t = layer_norm(text[a : a + 1], layer.norm_in)
            f = layer_norm(frames[b][mask[b]], layer.norm_in)
            o = attention(t, f, f, layer.heads, layer.q.weight, layer.q.bias, layer.k.weight,
                          layer.k.bias, layer.v.weight, layer.v.bias, eye, 0.0)
            branch = linear(o + linear(o, layer.proj), layer.out)
            pooled[a, b] = frames[b][mask[b]].mean(dim=0) + branch[0]
    return pooled


def cosine(x, y):
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))


def ref_coarse_conditioned(layer, text, frames, mask):
    """S5 coarse: cos(t, v_t) for every (text, video) pair."""
    return cosine(text[:, None], ref_pooling(layer, text, frames, mask))


def ref_coarse_mean(text, frames, mask):
    """Coarse without interaction: cos(t, mean of valid F')."""
    pooled = torch.stack([frames[b][mask[b]].mean(dim=0) for b in range(len(frames))])
    return cosine(text[:, None], pooled[None])


def ref_fine(words, word_mask, frames, frame_mask):
    """S5 fine: sim = unit(W) V^T; word->frame max averaged over words, frame->word max
    averaged over frames, the two directions averaged."""
    out = words.new_zeros(len(words), len(frames))
    for a in range(len(words)):
        w = F.normalize(words[a][word_mask[a]], dim=-1)
        for b in range(len(frames)):
            sim = w @ frames[b][frame_mask[b]].T  # [words, frames]
            word_to_frame = sim.max(dim=1).values.mean()
            frame_to_word = sim.max(dim=0).values.mean()
            out[a, b] = (word_to_frame + frame_to_word) / 2
    return out


# ---- helpers ------------------------------------------------------------------------------

def lengths_mask(lengths, size):
    return torch.arange(size)[None, :] < torch.tensor(lengths)[:, None]


def with_garbage(x, mask, scale=50.0):
    """``x`` with large noise in its padded slots."""
    x = x.clone()
    x[~mask] = torch.randn_like(x[~mask]) * scale
    return x


def build(seed=0, **overrides):
    """A random ``lfemi`` with every zero-initialised gate and map drawn at random, so
    that each part acts (``conftest.wake``)."""
    torch.manual_seed(seed)
    return wake(create_model("lfemi", max_frames=4, **overrides).eval())


def model_inputs(model):
    gen = torch.Generator().manual_seed(3)
    size = model.backbone.clip.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    video = torch.randn(3, 4, 3, size, size, generator=gen)
    mask = lengths_mask([4, 2, 1], 4)
    tokens = model.tokenizer.captions(CAPTIONS)
    kw, kw_mask = model.tokenizer.keywords(KEYWORDS, 3)
    return video, mask, tokens, kw, kw_mask


def ref_motion(model, video, mask, frames):
    """``F + Z(E(x_t - x_{t-1}))``: each frame's pixel difference to the frame before,
    through the image tower, mapped by ``Z``; zero for a video's first frame and padding."""
    differences = torch.zeros_like(video)
    for b in range(len(video)):
        for t in range(1, int(mask[b].sum())):
            differences[b, t] = video[b, t] - video[b, t - 1]
    return frames + model.motion.out(ref_clip_frames(model, differences, mask))


def reference_features(model, video, mask, tokens, kw, kw_mask):
    """(t, W_e, word mask, F', V_e) from the backbone outputs and the references above,
    each part present or not as the config says."""
    config = model.config
    frames = model.backbone.encode_frames(video, mask)
    if config.motion:
        frames = ref_motion(model, video, mask, frames)
    if config.temporal:
        frames = ref_temporal(model.temporal, frames, mask)
    if model.video_enhance is not None:
        local = ref_video_enhancement(model.video_enhance, frames, mask)
    else:
        local = F.normalize(frames, dim=-1) * mask[..., None]
    text = model.backbone.encode_tokens(tokens)
    words = text.tokens
    if model.text_enhance is not None:
        b, k, n = kw.shape
        keywords = model.backbone.encode_tokens(kw.reshape(b * k, n)).global_feature
        words = ref_text_enhancement(model.text_enhance, words, keywords.reshape(b, k, -1), kw_mask)
    return text.global_feature, words, text.mask, frames, local


def encoded(model, video, mask, tokens, kw, kw_mask):
    return model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask)


# ---- 1. fine-grained similarity -----------------------------------------------------------

def test_fine_grained_averages_both_max_directions_over_valid_positions():
    torch.manual_seed(0)
    word_mask = lengths_mask([3, 5, 1], 6)
    frame_mask = lengths_mask([4, 2], 4)
    words = with_garbage(torch.randn(3, 6, 8), word_mask)
    frames = with_garbage(torch.randn(2, 4, 8) * torch.rand(2, 4, 1), frame_mask)
    expected = ref_fine(words, word_mask, frames, frame_mask)
    got = fine_grained(words, word_mask, frames, frame_mask)
    torch.testing.assert_close(got, expected, **TIGHT)


def test_fine_grained_is_not_symmetric_so_both_directions_matter():
    """A sanity check of the case above: the two directions differ, so one alone fails."""
    torch.manual_seed(0)
    words, frames = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    w, f = F.normalize(words[0], dim=-1), frames[0]
    sim = w @ f.T
    one_way = sim.max(dim=1).values.mean()
    other_way = sim.max(dim=0).values.mean()
    assert abs(one_way - other_way) > 1e-3
    got = fine_grained(words, torch.ones(1, 3, dtype=torch.bool), frames,
                       torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(got[0, 0], (one_way + other_way) / 2, **TIGHT)


# ---- 2. coarse score with text-conditioned pooling ----------------------------------------

@pytest.mark.parametrize("texts", [2, 6])  # fewer / more texts than frames: both code branches
@pytest.mark.parametrize("heads", [1, 2])
def test_coarse_score_is_cosine_of_text_and_text_conditioned_pooling(heads, texts):
    model = build(interaction_heads=heads)
    torch.manual_seed(1)
    d = model.backbone.embed_dim
    frame_mask = lengths_mask([4, 2, 1], 4)
    frames = with_garbage(torch.randn(3, 4, d), frame_mask)
    text = TextFeatures(torch.randn(texts, d), None, torch.ones(texts, 1, dtype=torch.bool))
    video = VideoFeatures(frames.mean(1), frames, None, frame_mask)
    with torch.no_grad():
        expected = ref_coarse_conditioned(model.interaction, text.global_feature, frames,
                                          frame_mask)
        torch.testing.assert_close(model.coarse_score(text, video), expected, **TIGHT)


# ---- 3. temporal encoder, 4. video local enhancement ----------------------------------------

@pytest.mark.parametrize("build, reference", [
    # F' = F + Z(Transformer(F + P)), post-norm layers
    (lambda: TemporalEncoder(dim=8, max_frames=5, layers=2, heads=2), ref_temporal),
    # LSTM of [frame, mean] as a residual on the frame, then weighted unit vectors
    (lambda: VideoLocalEnhancement(dim=8, heads=2), ref_video_enhancement),
], ids=["temporal_encoder", "video_enhancement"])
def test_frame_modules_match_their_formulas_and_zero_padding(build, reference):
    torch.manual_seed(0)
    module = wake(build().eval())
    mask = lengths_mask([5, 3, 1], 5)
    frames = with_garbage(torch.randn(3, 5, 8), mask)
    with torch.no_grad():
        got = module(frames, mask)
        expected = reference(module, frames, mask)
    torch.testing.assert_close(got, expected, **TIGHT)
    assert bool((got[~mask] == 0).all())


# ---- 4. text local enhancement --------------------------------------------------------------

def test_text_enhancement_adds_gated_keyword_attention_to_every_word():
    torch.manual_seed(0)
    module = TextLocalEnhancement(dim=8, heads=2).eval()
    with torch.no_grad():
        module.gate.fill_(0.6)
    keyword_mask = lengths_mask([3, 1, 0], 3)  # the last caption has no keywords
    words = torch.randn(3, 5, 8)
    keywords = with_garbage(torch.randn(3, 3, 8), keyword_mask)
    with torch.no_grad():
        got = module(words, keywords, keyword_mask)
        expected = ref_text_enhancement(module, words, keywords, keyword_mask)
    torch.testing.assert_close(got, expected, **TIGHT)
    assert torch.equal(got[2], words[2])


# ---- the whole score from the references --------------------------------------------------

@torch.no_grad()
def test_full_score_is_reference_fine_plus_reference_coarse():
    c = case(build())
    torch.testing.assert_close(c.vid.frames, c.frames, **TIGHT)
    torch.testing.assert_close(c.vid.local, c.local, **TIGHT)
    torch.testing.assert_close(c.text.tokens, c.words, **TIGHT)
    expected = (ref_coarse_conditioned(c.model.interaction, c.t, c.frames, c.mask)
                + c.model.fine_gate * ref_fine(c.words, c.word_mask, c.local, c.mask))
    torch.testing.assert_close(c.model.score(c.text, c.vid), expected, **TIGHT)


# ---- 5. ablations: each switch gives the reduced formula ----------------------------------

def masked_means(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each video's mean over its valid frames, one video at a time."""
    return torch.stack([frames[b][mask[b]].mean(0) for b in range(len(frames))])


def ablated(part):
    """The model with ``part`` off, holding the full model's weights for the shared parts."""
    full = build()
    model = build(seed=1, **{part: False})
    model.load_state_dict(full.state_dict(), strict=False)
    return model


@dataclass
class Case:
    """A model, its inputs, the reference features of ``reference_features`` and what the
    model encodes from the same inputs."""

    model: object
    video: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor
    t: torch.Tensor
    words: torch.Tensor
    word_mask: torch.Tensor
    frames: torch.Tensor
    local: torch.Tensor
    text: TextFeatures
    vid: VideoFeatures


@torch.no_grad()
def case(model) -> Case:
    video, mask, tokens, kw, kw_mask = model_inputs(model)
    reference = reference_features(model, video, mask, tokens, kw, kw_mask)
    return Case(model, video, mask, tokens, *reference,
                *encoded(model, video, mask, tokens, kw, kw_mask))


@torch.no_grad()
def test_without_fine_grained_the_score_is_the_coarse_score_alone():
    c = case(ablated("fine_grained"))
    assert c.text.tokens is None and c.vid.local is None
    expected = ref_coarse_conditioned(c.model.interaction, c.t, c.frames, c.mask)
    torch.testing.assert_close(c.model.score(c.text, c.vid), expected, **TIGHT)


@torch.no_grad()
def test_without_interaction_coarse_is_cosine_with_the_mean_pooled_frames():
    c = case(ablated("interaction"))
    torch.testing.assert_close(c.vid.pooled, masked_means(c.frames, c.mask), **TIGHT)
    coarse = ref_coarse_mean(c.t, c.frames, c.mask)
    torch.testing.assert_close(c.model.coarse_score(c.text, c.vid), coarse, **TIGHT)
    torch.testing.assert_close(c.model.score(c.text, c.vid),
                               coarse + c.model.fine_gate * ref_fine(
                                   c.words, c.word_mask, c.local, c.mask), **TIGHT)


@torch.no_grad()
def test_without_video_enhancement_local_features_are_unit_temporal_features():
    c = case(ablated("video_enhance"))
    local = torch.zeros_like(c.frames)
    local[c.mask] = c.frames[c.mask] / c.frames[c.mask].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(c.vid.local, local, **TIGHT)
    expected = (ref_coarse_conditioned(c.model.interaction, c.t, c.frames, c.mask)
                + c.model.fine_gate * ref_fine(c.words, c.word_mask, local, c.mask))
    torch.testing.assert_close(c.model.score(c.text, c.vid), expected, **TIGHT)


@torch.no_grad()
def test_without_text_enhancement_words_are_the_plain_text_encoder_tokens():
    c = case(ablated("text_enhance"))
    words = c.model.backbone.encode_tokens(c.tokens).tokens
    assert torch.equal(c.text.tokens, words)  # keywords given, yet W_e = W
    expected = (ref_coarse_conditioned(c.model.interaction, c.t, c.frames, c.mask)
                + c.model.fine_gate * ref_fine(words, c.word_mask, c.local, c.mask))
    torch.testing.assert_close(c.model.score(c.text, c.vid), expected, **TIGHT)


@torch.no_grad()
def test_without_temporal_encoder_frame_features_are_the_backbone_features():
    c = case(ablated("temporal"))
    frames = ref_motion(c.model, c.video, c.mask, c.model.backbone.encode_frames(c.video, c.mask))
    torch.testing.assert_close(c.vid.frames, frames, **TIGHT)
    torch.testing.assert_close(c.vid.pooled, masked_means(frames, c.mask), **TIGHT)


@torch.no_grad()
def test_without_motion_frames_the_temporal_encoder_reads_the_towers_features():
    c = case(ablated("motion"))
    assert c.model.motion is None
    frames = ref_temporal(c.model.temporal, c.model.backbone.encode_frames(c.video, c.mask),
                          c.mask)
    torch.testing.assert_close(c.vid.frames, frames, **TIGHT)
    expected = (ref_coarse_conditioned(c.model.interaction, c.t, frames, c.mask)
                + c.model.fine_gate * ref_fine(c.words, c.word_mask, c.local, c.mask))
    torch.testing.assert_close(c.model.score(c.text, c.vid), expected, **TIGHT)


# ---- 6. the CLIP4Clip baselines (meanP, seqTransf) and the first-stage pair ----------------

def ref_clip_frames(model, video, mask):
    """CLIP frame features F, each video's valid frames alone through the image tower."""
    frames = video.new_zeros(*mask.shape, model.backbone.embed_dim)
    for b in range(len(video)):
        frames[b][mask[b]] = model.backbone.clip.encode_image(video[b][mask[b]])
    return frames


def ref_video_frames(model, video, mask):
    """F' (F, plus motion frames and then the reference temporal encoder when the model
    has them)."""
    frames = ref_clip_frames(model, video, mask)
    if model.motion is not None:
        frames = ref_motion(model, video, mask, frames)
    return frames if model.temporal is None else ref_temporal(model.temporal, frames, mask)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def baseline(name):
    torch.manual_seed(0)
    return wake(create_model(name, max_frames=4).eval())


@pytest.mark.parametrize("name", ["meanp", "seqtransf"])
def test_baseline_score_is_cosine_of_caption_and_mean_of_valid_frame_features(name):
    """meanP: cos(t, mean of the valid CLIP frame features F); seqTransf: the same over
    F' = F + Z(Transformer(F + P)). The padded frames hold garbage pixels."""
    model = baseline(name)
    assert (model.temporal is not None) == (name == "seqtransf")
    video, mask, tokens, kw, kw_mask = model_inputs(model)
    video = with_garbage(video, mask)
    with torch.no_grad():
        t = model.backbone.encode_tokens(tokens).global_feature
        frames = ref_video_frames(model, video, mask)
        pooled = masked_means(frames, mask)
        text, vid = encoded(model, video, mask, tokens, kw, kw_mask)
        assert text.tokens is None and vid.local is None
        torch.testing.assert_close(vid.frames, frames, **TIGHT)
        torch.testing.assert_close(vid.pooled, pooled, **TIGHT)
        torch.testing.assert_close(model.score(text, vid), cosine(t[:, None], pooled[None]),
                                   **TIGHT)


@pytest.mark.parametrize("name", ["meanp", "seqtransf"])
def test_baseline_score_of_stored_frame_features_ignores_their_padded_slots(name):
    """The rerank rebuilds ``VideoFeatures.of_frames`` from stored rows: garbage in the
    padded slots of F' must reach neither the pooled vector nor the score."""
    model = baseline(name)
    torch.manual_seed(1)
    d = model.backbone.embed_dim
    mask = lengths_mask([4, 2, 1], 4)
    frames = with_garbage(torch.randn(3, 4, d), mask)
    t = torch.randn(5, d)
    text = TextFeatures(t, None, torch.ones(5, 1, dtype=torch.bool))
    with torch.no_grad():
        video = VideoFeatures.of_frames(frames, None, mask)
        torch.testing.assert_close(video.pooled, masked_means(frames, mask), **TIGHT)
        expected = cosine(t[:, None], masked_means(frames, mask)[None])
        torch.testing.assert_close(model.score(text, video), expected, **TIGHT)


@pytest.mark.parametrize("name", ["lfemi", "meanp", "seqtransf"])
def test_first_stage_score_is_unit_caption_times_unit_mean_of_valid_temporal_features(name):
    """first_stage_score = unit(t) @ unit(masked mean of F').T, each embedding unit length;
    the same vector from stored rows with garbage in their padded slots."""
    model = build() if name == "lfemi" else baseline(name)
    video, mask, tokens, kw, kw_mask = model_inputs(model)
    video = with_garbage(video, mask)
    with torch.no_grad():
        text_vector = unit(model.backbone.encode_tokens(tokens).global_feature)
        video_vector = unit(masked_means(ref_video_frames(model, video, mask), mask))
        text, vid = encoded(model, video, mask, tokens, kw, kw_mask)
        torch.testing.assert_close(model.video_embedding(vid), video_vector, **TIGHT)
        torch.testing.assert_close(model.text_embedding(text), text_vector, **TIGHT)
        torch.testing.assert_close(model.first_stage_score(text, vid),
                                   text_vector @ video_vector.T, **TIGHT)
        stored = VideoFeatures.of_frames(with_garbage(vid.frames, mask), vid.local, mask)
        torch.testing.assert_close(model.video_embedding(stored), video_vector, **TIGHT)


# ---- 7. the training loss: full-score loss plus weighted first-stage loss -----------------

def ref_info_nce(sim, text_keys, column_keys, scale):
    """Symmetric InfoNCE written out: text -> video cross-entropy over the columns; video ->
    text -log(sum over the video's captions / sum over all captions); the two averaged."""
    logits = scale * sim
    positive = text_keys[:, None] == column_keys[None, :]
    t2v = torch.stack([torch.logsumexp(row, 0) - row[pos].squeeze(0)
                       for row, pos in zip(logits, positive, strict=True)]).mean()
    v2t = torch.stack([torch.logsumexp(col, 0) - torch.logsumexp(col[pos], 0)
                       for col, pos in zip(logits.T, positive.T, strict=True)]).mean()
    return (t2v + v2t) / 2


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_contrastive_step_is_full_score_loss_plus_weighted_first_stage_loss(weight):
    """A video captioned twice in the batch is one column, its first row's features, and
    all its captions are that column's positives. Rows 3 and 4 repeat the keys of videos
    10 and 11 with other frames, so any other choice of row changes the loss."""
    model = build()
    scale = 20.0
    with torch.no_grad():
        model.loss.logit_scale.fill_(math.log(scale))
    video, mask, tokens, kw, kw_mask = model_inputs(model)
    gen = torch.Generator().manual_seed(4)
    video = torch.cat([video, torch.randn(2, *video.shape[1:], generator=gen)])
    mask = torch.cat([mask, lengths_mask([3, 4], 4)])
    video = with_garbage(video, mask)
    tokens = model.tokenizer.captions([*CAPTIONS, "a red circle moves right", "a square sits"])
    kw, kw_mask = model.tokenizer.keywords([*KEYWORDS, ["red circle"], []], 3)
    keys = torch.tensor([10, 11, 12, 10, 11])
    batch = {"frames": video, "frame_mask": mask, "tokens": tokens, "keyword_tokens": kw,
             "keyword_mask": kw_mask, "video_key": keys}
    with torch.no_grad():
        got = contrastive_step(model, model, batch, weight)
        text, vid = encoded(model, video, mask, tokens, kw, kw_mask)
        columns = [0, 1, 2]  # the first rows of videos 10, 11, 12
        column_keys = torch.tensor([10, 11, 12])
        full = model.score(text, vid)[:, columns]
        first = unit(text.global_feature) @ unit(vid.pooled[columns]).T
        expected = (ref_info_nce(full, keys, column_keys, scale)
                    + weight * ref_info_nce(first, keys, column_keys, scale))
        torch.testing.assert_close(got, expected, **TIGHT)
        later_rows = ref_info_nce(model.score(text, vid)[:, [3, 4, 2]], keys, column_keys, scale)
        assert abs(later_rows - ref_info_nce(full, keys, column_keys, scale)) > 1e-3
