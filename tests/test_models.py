"""vtr_models: shapes, masking, parameter sharing, gradients, scoring, checkpoints, learning."""

from __future__ import annotations

import io
import logging
import math

import pytest
import torch
from PIL import Image

from vtr_models.backbone import BackboneLoadError, BackboneSpec
from vtr_models.checkpoint import load_checkpoint, save_checkpoint
from vtr_models.factory import create_model
from vtr_models.modal_interaction import TextConditionedPooling
from vtr_models.model_config import MODEL_CONFIGS

CAPTIONS = ["a red circle moves left", "a blue square jumps", "two dogs run", "a cat sleeps"]
KEYWORDS = [["red circle", "move left"], ["blue square"], ["dog", "run"], []]


def build(name: str = "lfemi", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return create_model(name, **overrides).eval()


def inputs(model, num_videos: int = 4, frames: int = 12, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    size = model.backbone.clip.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    video = torch.randn(num_videos, frames, 3, size, size, generator=gen)
    mask = torch.ones(num_videos, frames, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 1:] = False
    tokens = model.tokenizer.captions(CAPTIONS[:num_videos])
    kw, kw_mask = model.tokenizer.keywords(KEYWORDS[:num_videos], model.config.max_keywords)
    return video, mask, tokens, kw, kw_mask


def scores(model, video, mask, tokens, kw, kw_mask, chunk_size=128):
    with torch.no_grad():
        return model.score(model.encode_text(tokens, kw, kw_mask),
                           model.encode_video(video, mask), chunk_size=chunk_size)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_shapes(name):
    model = build(name)
    video, mask, tokens, kw, kw_mask = inputs(model)
    v = model.encode_video(video, mask)
    t = model.encode_text(tokens, kw, kw_mask)
    d = model.backbone.embed_dim
    assert v.pooled.shape == (4, d) and v.frames.shape == (4, 12, d)
    assert t.global_feature.shape == (4, d)
    assert model.score(t, v).shape == (4, 4)
    assert model.video_embedding(v).shape == (4, d) and model.text_embedding(t).shape == (4, d)
    assert torch.allclose(model.video_embedding(v).norm(dim=-1), torch.ones(4))
    if name == "lfemi":
        assert v.local.shape == (4, 12, d) and t.tokens.shape == (4, tokens.shape[1], d)
    else:
        assert v.local is None and t.tokens is None


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_padded_frames_change_nothing(name):
    model = build(name)
    video, mask, tokens, kw, kw_mask = inputs(model)
    base = scores(model, video, mask, tokens, kw, kw_mask)
    noisy = video.clone()
    noisy[~mask] = torch.randn_like(noisy[~mask]) * 5  # garbage in the padding
    assert torch.allclose(scores(model, noisy, mask, tokens, kw, kw_mask), base, atol=1e-5)
    # Fewer padded slots (T = 6 instead of 12) give the same scores for videos that fit.
    short = scores(model, video[:2, :6], mask[:2, :6], tokens, kw, kw_mask)
    assert torch.allclose(short[:, 1], base[:, 1], atol=1e-5)


def test_padded_tokens_and_keywords_change_nothing():
    model = build("lfemi")
    video, mask, tokens, kw, kw_mask = inputs(model)
    base = scores(model, video, mask, tokens, kw, kw_mask)
    assert int(tokens.argmax(-1).max()) < 16
    assert torch.allclose(scores(model, video, mask, tokens[:, :16], kw, kw_mask), base, atol=1e-5)
    # Two keyword slots instead of five: the empty slots were masked anyway.
    assert torch.allclose(
        scores(model, video, mask, tokens, kw[:, :2], kw_mask[:, :2]), base, atol=1e-5
    )
    # Keywords do matter when they are there.
    other_kw, other_mask = model.tokenizer.keywords([["zebra"]] * 4, 5)
    assert not torch.allclose(scores(model, video, mask, tokens, other_kw, other_mask), base)


def test_keyword_encoder_shares_the_text_encoder():
    model = build("lfemi")
    tokenizer = model.tokenizer
    tokens = tokenizer.captions(["a video"])
    kw, kw_mask = tokenizer.keywords([["zebra"]], 5)
    zebra = int(kw[0, 0, 1])  # the token id after the start token
    assert zebra not in tokens[0].tolist()
    model.train()
    words = model.encode_text(tokens, kw, kw_mask).tokens
    words.sum().backward()
    grad = model.backbone.clip.token_embedding.weight.grad
    assert grad[zebra].abs().sum() > 0  # the keyword reached the text encoder's own embedding
    assert not [n for n, _ in model.named_parameters() if "keyword" in n]


def test_gradients_reach_every_trainable_module():
    model = build("lfemi")
    model.train()
    video, mask, tokens, kw, kw_mask = inputs(model)
    mask[:] = True
    sim = model.score(model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask))
    ids = torch.arange(4)
    model.loss(sim, ids, ids).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_score_is_fine_plus_coarse_and_chunk_invariant():
    model = build("lfemi")
    video, mask, tokens, kw, kw_mask = inputs(model)
    with torch.no_grad():
        t, v = model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask)
        full = model.score(t, v)
        assert torch.allclose(full, model.coarse_score(t, v) + model.fine_score(t, v), atol=1e-6)
        for chunk in (1, 3):
            assert torch.allclose(model.score(t, v, chunk_size=chunk), full, atol=1e-6)


@pytest.mark.parametrize("part", ["video_enhance", "text_enhance", "interaction", "fine_grained"])
def test_switching_a_part_off_changes_the_score(part):
    full = build("lfemi")
    ablated = build("lfemi", **{part: False})
    ablated.load_state_dict(full.state_dict(), strict=False)  # shared parts, same weights
    video, mask, tokens, kw, kw_mask = inputs(full)
    assert not torch.allclose(scores(full, video, mask, tokens, kw, kw_mask),
                              scores(ablated, video, mask, tokens, kw, kw_mask), atol=1e-4)


def test_checkpoint_round_trip(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        model = build("lfemi", temporal_layers=1, max_keywords=3)
    assert "initialized randomly" in caplog.text  # a random backbone says so
    caplog.clear()
    video, mask, tokens, kw, kw_mask = inputs(model)
    kw, kw_mask = kw[:, :3], kw_mask[:, :3]
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(folder)
    assert "initialized randomly" not in caplog.text  # a loaded checkpoint does not
    assert loaded.config == model.config
    assert torch.equal(scores(loaded, video, mask, tokens, kw, kw_mask),
                       scores(model, video, mask, tokens, kw, kw_mask))


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path)


def test_backbone_spec_and_unloadable_weights(tmp_path):
    assert BackboneSpec.parse("ViT-B-32:openai") == BackboneSpec("ViT-B-32", "openai")
    assert BackboneSpec.parse("ViT-B-16:/m/ckpt.bin").pretrained == "/m/ckpt.bin"
    assert BackboneSpec.parse("vtr-tiny").pretrained is None
    with pytest.raises(BackboneLoadError, match="--backbone vtr-tiny:/models"):
        create_model("meanp", backbone=f"vtr-tiny:{tmp_path / 'missing.bin'}")
    with pytest.raises(BackboneLoadError, match="unknown open_clip model"):
        create_model("meanp", backbone="no-such-model")


def test_preprocess_from_ingest_jpegs():
    model = build("meanp")
    jpegs = []
    for color in ["red", "green", "blue"]:
        buf = io.BytesIO()
        Image.new("RGB", (120, 90), color).save(buf, format="JPEG")
        jpegs.append(buf.getvalue())
    frames, mask = model.preprocess.batch([jpegs, jpegs[:1]])
    assert frames.shape == (2, 12, 3, 64, 64)
    assert mask.sum(1).tolist() == [3, 1]
    assert frames[0, 0, 0].mean() > frames[0, 1, 0].mean()  # red channel of the red frame


def test_a_few_steps_fit_eight_pairs():
    torch.manual_seed(0)
    model = create_model("lfemi")
    model.train()
    gen = torch.Generator().manual_seed(3)
    video = torch.randn(8, 4, 3, 64, 64, generator=gen)
    mask = torch.ones(8, 4, dtype=torch.bool)
    captions = [f"clip number {i} shows {w}" for i, w in
                enumerate(["cats", "dogs", "cars", "trees", "boats", "birds", "shoes", "clouds"])]
    tokens = model.tokenizer.captions(captions)
    kw, kw_mask = model.tokenizer.keywords([[c.split()[-1]] for c in captions], 5)
    ids = torch.arange(8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        sim = model.score(model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask))
        loss = model.loss(sim, ids, ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 1.5 and losses[-1] < 0.1, losses


def attention_pooling_reference(layer, text, frames, frame_mask):
    """X-Pool's layer written the direct way: project every frame to keys and values."""
    nt, d = text.shape
    nv, t, _ = frames.shape
    h, dh = layer.heads, d // layer.heads
    q = layer.q(layer.norm_in(text)).view(nt, h, dh)
    f = layer.norm_in(frames)
    k, v = layer.k(f).view(nv, t, h, dh), layer.v(f).view(nv, t, h, dh)
    logits = torch.einsum("ahd,bthd->abht", q, k) / math.sqrt(dh)
    attn = logits.masked_fill(~frame_mask[None, :, None, :], float("-inf")).softmax(dim=-1)
    pooled = layer.out(torch.einsum("abht,bthd->abhd", attn, v).reshape(nt, nv, d))
    return layer.norm_out(pooled + layer.proj(pooled))


@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("texts", [1, 20])  # both branches: a search query, a training batch
def test_text_conditioned_pooling_equals_the_direct_form(heads, texts):
    torch.manual_seed(heads + texts)
    layer = TextConditionedPooling(64, heads).eval()
    text, frames = torch.randn(texts, 64), torch.randn(7, 6, 64)
    mask = torch.ones(7, 6, dtype=torch.bool)
    mask[2, 3:] = False
    expected = attention_pooling_reference(layer, text, frames, mask)
    assert torch.allclose(layer(text, frames, mask), expected, atol=1e-5)
