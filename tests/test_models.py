"""vtr_models: shapes, masking, parameter sharing, gradients, scoring, checkpoints, learning."""

from __future__ import annotations

import io
import json
import logging
import math

import pytest
import torch
from conftest import wake
from PIL import Image

from vtr_models.augment import random_placement, random_shift
from vtr_models.backbone import BackboneLoadError, BackboneSpec
from vtr_models.checkpoint import load_checkpoint, save_checkpoint
from vtr_models.factory import create_model
from vtr_models.frame_thinning import even_indices
from vtr_models.frames import FramePreprocessor
from vtr_models.modal_interaction import TextConditionedPooling
from vtr_models.model_config import MODEL_CONFIGS
from vtr_models.motion import frame_differences
from vtr_models.param_groups import GATE_LR_SCALE, optimizer_groups
from vtr_models.text_inputs import trim_padding

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
    elif name == "rrn":  # the relations read the words, not local features
        assert v.local is None and t.tokens.shape == (4, tokens.shape[1], d)
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
    model = wake(build("lfemi"))
    video, mask, tokens, kw, kw_mask = inputs(model)
    base = scores(model, video, mask, tokens, kw, kw_mask)
    assert int(tokens.argmax(-1).max()) < 16
    assert torch.allclose(scores(model, video, mask, tokens[:, :16], kw, kw_mask), base, atol=1e-5)
    trimmed = trim_padding(tokens)  # what a search encodes: up to the longest end token
    assert trimmed.shape[1] == int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]
    assert torch.allclose(scores(model, video, mask, trimmed, kw, kw_mask), base, atol=1e-5)
    # Two keyword slots instead of five: the empty slots were masked anyway.
    assert torch.allclose(
        scores(model, video, mask, tokens, kw[:, :2], kw_mask[:, :2]), base, atol=1e-5
    )
    # Keywords do matter when they are there.
    other_kw, other_mask = model.tokenizer.keywords([["zebra"]] * 4, 5)
    assert not torch.allclose(scores(model, video, mask, tokens, other_kw, other_mask), base)


def test_keyword_encoder_shares_the_text_encoder():
    model = wake(build("lfemi"))
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
    model = wake(build("lfemi"))
    model.train()
    video, mask, tokens, kw, kw_mask = inputs(model)
    mask[:] = True
    sim = model.score(model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask))
    ids = torch.arange(4)
    model.loss(sim, ids, ids).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert missing == []


def test_score_is_coarse_plus_gated_fine_and_chunk_invariant():
    model = wake(build("lfemi"))
    video, mask, tokens, kw, kw_mask = inputs(model)
    with torch.no_grad():
        t, v = model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask)
        full = model.score(t, v)
        expected = model.coarse_score(t, v) + model.fine_gate * model.fine_score(t, v)
        assert torch.allclose(full, expected, atol=1e-6)
        for chunk in (1, 3):
            assert torch.allclose(model.score(t, v, chunk_size=chunk), full, atol=1e-6)


ABLATIONS = [{}, {"temporal": False}, {"video_enhance": False}, {"text_enhance": False},
             {"interaction": False}, {"fine_grained": False}, {"motion": False},
             {"relations": True}, {"spatial": True},
             {"semantic_levels": ("entity", "action", "relationship"),
              "tag_vocab": (("circle", "square"), ("move",), ("left", "then"))}]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(o) or "lfemi")
def test_an_untrained_lfemi_scores_as_clip_mean_pooling(overrides):
    """Every part of seed 002 enters through a residual or gate that adds nothing at
    initialisation: the full score is meanp's cosine of the caption with the mean CLIP
    frame feature, and the first-stage vector is that mean, to 1e-6."""
    model = build("lfemi", **overrides)
    meanp = build("meanp", seed=1)
    meanp.backbone.load_state_dict(model.backbone.state_dict())
    video, mask, tokens, kw, kw_mask = inputs(model)
    expected = scores(meanp, video, mask, tokens, kw, kw_mask)
    torch.testing.assert_close(scores(model, video, mask, tokens, kw, kw_mask), expected,
                               atol=1e-6, rtol=0)
    with torch.no_grad():
        frames = model.backbone.encode_frames(video, mask)
        clip_mean = torch.nn.functional.normalize(
            frames.sum(1) / mask.sum(1, keepdim=True), dim=-1)
        vector = model.video_embedding(model.encode_video(video, mask))
    torch.testing.assert_close(vector, clip_mean, atol=1e-6, rtol=0)


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: ",".join(o) or "lfemi")
def test_every_new_parameter_learns_within_a_few_steps(overrides):
    """The zero gates and maps open from the first step and let gradients through to what
    lies behind them: by the fourth optimiser step every trainable parameter has had a
    non-zero gradient (no branch stays dead), with the auxiliary losses a model trains
    with (the tag losses of semantic levels)."""
    torch.manual_seed(0)
    model = create_model("lfemi", **overrides).train()
    video, mask, tokens, kw, kw_mask = inputs(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.arange(4)
    learnt: set[str] = set()
    sizes = sum(len(vocab) for vocab in model.config.tag_vocab)
    tags = torch.randint(0, 2, (4, sizes), generator=torch.Generator().manual_seed(0)).float()
    for _ in range(4):
        text, clips = model.encode_text(tokens, kw, kw_mask), model.encode_video(video, mask)
        optimizer.zero_grad()
        loss = model.loss(model.score(text, clips), ids, ids)
        (loss + model.auxiliary_loss(text, clips, tags if sizes else None)).backward()
        learnt |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
        optimizer.step()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable - learnt == set()


def test_motion_frames_are_the_change_between_frames():
    frames = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3, 1, 1)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    diff = frame_differences(frames, mask)
    assert diff[:, 0].abs().sum() == 0  # nothing before the first frame
    torch.testing.assert_close(diff[0, 1:], frames[0, 1:] - frames[0, :-1])
    torch.testing.assert_close(diff[1, 1], frames[1, 1] - frames[1, 0])
    assert diff[1, 2:].abs().sum() == 0  # padding


def test_motion_frames_cost_nothing_until_they_can_change_a_feature(monkeypatch):
    """lfemi has motion frames by default; an untrained model's zero map ``Z`` adds nothing,
    so inference skips their image-tower pass (a zero-shot search costs what meanp's does),
    while training runs it (``Z`` learns from it) and a trained ``Z`` changes the features."""
    model = build("lfemi")
    assert model.config.motion and model.motion is not None
    video, mask, *_ = inputs(model)
    passes = []
    encode = model.backbone.encode_frames
    monkeypatch.setattr(model.backbone, "encode_frames",
                        lambda *a, **k: passes.append(1) or encode(*a, **k))
    with torch.no_grad():
        untrained = model.encode_video(video, mask).frames
    assert len(passes) == 1
    model.encode_video(video, mask)  # gradients on: Z learns from the motion frames
    assert len(passes) == 3
    with torch.no_grad():
        torch.nn.init.normal_(model.motion.out.weight)
        trained = model.encode_video(video, mask).frames
    assert len(passes) == 5
    assert not torch.allclose(trained, untrained)


def test_spatial_frames_read_the_patch_tokens_in_grid_order():
    """The tower's pooled features are the frame features with or without the tokens; the
    spatial map reads each patch in its place (a pooling of the tokens would not), so moving
    every token to another patch changes the frame's feature once the map has learnt;
    padded frames' tokens stay zero."""
    model = build("lfemi", spatial=True)
    video, mask, *_ = inputs(model)
    patches, width = model.backbone.patch_grid()
    with torch.no_grad():
        pooled, tokens = model.backbone.encode_frames(video, mask, tokens=True)
        torch.testing.assert_close(pooled, model.backbone.encode_frames(video, mask))
        assert tokens.shape == (*mask.shape, patches, width)
        assert tokens[~mask].abs().sum() == 0
        torch.nn.init.normal_(model.spatial.out.weight)
        moved = tokens.roll(1, dims=2)  # every patch's token one place on
        assert not torch.allclose(model.spatial(pooled, tokens), model.spatial(pooled, moved))


def test_spatial_frames_need_a_vit_tower():
    from vtr_models.backbone import BackboneSpec, ClipBackbone, create_clip

    resnet = ClipBackbone(create_clip(BackboneSpec.parse("RN50"), load_weights=False))
    with pytest.raises(ValueError, match="need a ViT image tower"):
        resnet.keep_patch_tokens()
    plain = build("lfemi")  # a ViT whose model reads no tokens: asked for them, it says so
    video, mask, *_ = inputs(plain)
    with pytest.raises(ValueError, match="keep_patch_tokens"):
        plain.backbone.encode_frames(video, mask, tokens=True)


@pytest.mark.parametrize("part", ["video_enhance", "text_enhance", "interaction", "fine_grained"])
def test_switching_a_part_off_changes_the_score(part):
    full = wake(build("lfemi"))
    ablated = build("lfemi", **{part: False})
    ablated.load_state_dict(full.state_dict(), strict=False)  # shared parts, same weights
    video, mask, tokens, kw, kw_mask = inputs(full)
    assert not torch.allclose(scores(full, video, mask, tokens, kw, kw_mask),
                              scores(ablated, video, mask, tokens, kw, kw_mask), atol=1e-4)


def test_checkpoint_round_trip(tmp_path, caplog):
    with caplog.at_level(logging.INFO):  # as in a Ray Train worker or a job
        model = build("lfemi", temporal_layers=1, max_keywords=3)
    assert "initialized randomly" in caplog.text  # a random backbone says so
    # and that is all open_clip says: its INFO account of each build step is hidden
    assert [r.levelname for r in caplog.records if "open_clip" in r.pathname] == ["WARNING"]
    caplog.clear()
    video, mask, tokens, kw, kw_mask = inputs(model)
    kw, kw_mask = kw[:, :3], kw_mask[:, :3]
    folder = save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with caplog.at_level(logging.INFO):
        loaded = load_checkpoint(folder)
    assert "initialized randomly" not in caplog.text  # a loaded checkpoint does not
    assert not [r for r in caplog.records if "open_clip" in r.pathname]
    assert loaded.config == model.config
    assert torch.equal(scores(loaded, video, mask, tokens, kw, kw_mask),
                       scores(model, video, mask, tokens, kw, kw_mask))


def test_checkpoint_id_follows_the_model_not_the_bytes(tmp_path):
    """Re-serialised JSON (other key order, CRLF) and re-saved tensors (another order
    in the file) keep the id; one changed weight or setting changes it."""
    from safetensors.torch import load_file, save_file

    from vtr_models.checkpoint import checkpoint_id

    folder = save_checkpoint(build("meanp"), tmp_path / "a")
    same = tmp_path / "b"
    same.mkdir()
    config = json.loads((folder / "config.json").read_text())
    text = json.dumps(dict(reversed(list(config.items()))), indent=4).replace("\n", "\r\n")
    (same / "config.json").write_bytes(text.encode())
    tensors = load_file(folder / "model.safetensors")
    save_file(dict(reversed(list(tensors.items()))), same / "model.safetensors",
              metadata={"written_by": "another tool"})
    assert (same / "model.safetensors").read_bytes() != (folder / "model.safetensors").read_bytes()
    assert checkpoint_id(same) == checkpoint_id(folder)

    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, same / "model.safetensors")
    assert checkpoint_id(same) != checkpoint_id(folder)
    save_file(load_file(folder / "model.safetensors"), same / "model.safetensors")
    (same / "config.json").write_text(json.dumps({**config, "dropout": 0.5}))
    assert checkpoint_id(same) != checkpoint_id(folder)


def test_dropped_tokens_counts_every_token_past_the_context():
    """Exact for any length (well past a few thousand tokens), zero when the text fits."""
    tokenizer = build("meanp").tokenizer
    context = tokenizer.context_length
    assert tokenizer.dropped_tokens("dog " * (context - 2)) == 0  # with start and end tokens
    assert tokenizer.dropped_tokens("dog " * (context - 1)) == 1
    long = "a red shape moves " * 700  # 2,800 words
    assert tokenizer.dropped_tokens(long) == len(tokenizer.tokenizer.encode(long)) + 2 - context


def test_a_training_runs_folder_names_its_final_model(tmp_path):
    """``train --checkpoint RUN`` writes ``RUN/final``; every job's ``--checkpoint`` takes
    RUN or RUN/final for the same model."""
    from vtr_models.checkpoint import FINAL_FOLDER, model_id, open_model

    final = save_checkpoint(build("meanp"), tmp_path / "run" / FINAL_FOLDER)
    assert model_id(tmp_path / "run") == model_id(final)
    assert open_model(tmp_path / "run")[1] == model_id(final)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(tmp_path / "run" / "ray")  # no model there, nor in a final/ inside


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


def test_even_indices_keep_first_last_and_order():
    assert even_indices(12, 4) == [0, 4, 7, 11]
    kept = even_indices(100, 12)
    assert len(kept) == 12 and kept[0] == 0 and kept[-1] == 99
    gaps = [b - a for a, b in zip(kept, kept[1:], strict=False)]
    assert max(gaps) - min(gaps) <= 1 and min(gaps) > 0  # even up to rounding, increasing
    assert even_indices(5, 12) == [0, 1, 2, 3, 4] and even_indices(5, 5) == [0, 1, 2, 3, 4]
    assert even_indices(1, 1) == [0] and even_indices(7, 1) == [0]
    with pytest.raises(ValueError):
        even_indices(3, 0)


def grey_jpegs(count: int) -> list[bytes]:
    """JPEGs whose grey level (20 * i) tells which frame i they are."""
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("L", (16, 16), 20 * i).convert("RGB").save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def frame_numbers(frames: torch.Tensor, mask: torch.Tensor) -> list[int]:
    return [round(v / 20) for v in frames[mask, 0].tolist()]


def to_level(image: Image.Image) -> torch.Tensor:
    return torch.tensor([float(image.getpixel((8, 8))[0])])


def test_frame_preprocessor_thins_evenly_over_the_whole_video():
    frames, mask = FramePreprocessor(to_level, 4)(grey_jpegs(12))
    assert mask.tolist() == [True] * 4
    assert frame_numbers(frames, mask) == even_indices(12, 4) == [0, 4, 7, 11]
    # fewer JPEGs than max_frames: all of them, in order, then padding
    frames, mask = FramePreprocessor(to_level, 6)(grey_jpegs(3))
    assert mask.tolist() == [True] * 3 + [False] * 3
    assert frame_numbers(frames, mask) == [0, 1, 2]
    assert frames[~mask].eq(0).all()


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
    values = torch.einsum("abht,bthd->abhd", attn, v).reshape(nt, nv, d)
    mean = torch.stack([frames[b][frame_mask[b]].mean(0) for b in range(nv)])
    return mean[None] + layer.out(values + layer.proj(values))


@pytest.mark.parametrize("heads", [1, 2, 4])  # without gradients, 4 heads are not folded
@pytest.mark.parametrize("texts", [1, 20])  # both branches: a search query, a training batch
@pytest.mark.parametrize("grad", [True, False])  # without: a search's folded output maps
def test_text_conditioned_pooling_equals_the_direct_form(heads, texts, grad):
    torch.manual_seed(heads + texts)
    layer = wake(TextConditionedPooling(64, heads).eval())
    text, frames = torch.randn(texts, 64), torch.randn(7, 6, 64)
    mask = torch.ones(7, 6, dtype=torch.bool)
    mask[2, 3:] = False
    expected = attention_pooling_reference(layer, text, frames, mask)
    with torch.set_grad_enabled(grad):
        assert torch.allclose(layer(text, frames, mask), expected, atol=1e-5)


def test_folded_pooling_follows_the_weights():
    """A search's folded maps are rebuilt when training or a loaded state changes a weight."""
    torch.manual_seed(0)
    layer = wake(TextConditionedPooling(32, 2).eval())
    text, frames, mask = torch.randn(1, 32), torch.randn(5, 4, 32), torch.ones(5, 4).bool()
    optimizer = torch.optim.SGD(layer.parameters(), lr=1e-3)
    other = wake(TextConditionedPooling(32, 2)).state_dict()
    for change in (lambda: optimizer.step(), lambda: layer.load_state_dict(other)):
        with torch.no_grad():
            before = layer(text, frames, mask)
        layer.train()
        layer(text.expand(8, -1), frames, mask).sum().backward()  # the training branch
        change()
        layer.eval()
        with torch.no_grad():
            after = layer(text, frames, mask)
        expected = attention_pooling_reference(layer, text, frames, mask)
        assert not torch.allclose(before, expected, atol=1e-3)
        assert torch.allclose(after, expected, atol=1e-5)


def test_keyword_gate_starts_closed():
    """S3 adds nothing at initialisation (W_e = W); that its gate learns is
    ``test_every_new_parameter_learns_within_a_few_steps``."""
    model = build("lfemi")
    video, mask, tokens, kw, kw_mask = inputs(model)
    words = model.backbone.encode_tokens(tokens).tokens
    assert torch.equal(model.encode_text(tokens, kw, kw_mask).tokens, words)


def test_enhanced_local_features_are_weighted_unit_vectors():
    """V_e rows have the norm of their adaptive frame weight (exactly 1 at initialisation,
    in (0, 2) once trained), padded rows zero, so the fine-grained score is a weighted
    cosine in [-2, 2]; at initialisation V_e is the unit F'."""
    model = build("lfemi")
    video, mask, tokens, kw, kw_mask = inputs(model)
    with torch.no_grad():
        features = model.encode_video(video, mask)
        unit_frames = torch.nn.functional.normalize(features.frames, dim=-1)
        assert torch.allclose(features.local[mask], unit_frames[mask], atol=1e-6)
        wake(model)
        features = model.encode_video(video, mask)
        norms = features.local.norm(dim=-1)
        fine = model.fine_score(model.encode_text(tokens, kw, kw_mask), features)
    assert bool((norms[mask] > 0).all() and (norms[mask] < 2).all())
    assert not torch.allclose(norms[mask], torch.ones_like(norms[mask]))
    assert bool((norms[~mask] == 0).all())
    assert fine.abs().max() <= 2


def test_start_token_is_not_a_word():
    """The start token sees only itself (causal mask): the same feature for every caption, so
    it is left out of the word mask; the words and EOT are in."""
    model = build("lfemi")
    tokens = model.tokenizer.captions(CAPTIONS)
    with torch.no_grad():
        text = model.backbone.encode_tokens(tokens)
    eot = tokens.argmax(dim=-1)
    assert not text.mask[:, 0].any()
    assert text.mask.sum(dim=1).tolist() == eot.tolist()  # positions 1..EOT
    assert torch.allclose(text.tokens[0, 0], text.tokens[1, 0])


def test_reversing_a_clip_changes_the_temporal_encoder_output():
    """The temporal encoder sees frame order once its zero-initialised positions and output
    map have values (at initialisation it adds nothing)."""
    model = wake(build("seqtransf", max_frames=8))
    video, _, _, _, _ = inputs(model, frames=8)
    mask = torch.ones(4, 8, dtype=torch.bool)
    with torch.no_grad():
        frames = model.backbone.encode_frames(video, mask)
        forward = model.encode_video(video, mask).pooled
        backward = model.encode_video(video.flip(1), mask).pooled
    change = ((forward - backward).norm(dim=-1) / forward.norm(dim=-1)).mean()
    assert change > 1e-3, change
    assert torch.allclose(frames.mean(1), model.backbone.encode_frames(video.flip(1), mask).mean(1),
                          atol=1e-5)  # the backbone alone cannot see order


def test_weight_decay_groups():
    """Decay only on weight matrices; temperature, norms, biases, gates and position
    embeddings are left out; the backbone and the gates get their own learning rates."""
    model = build("lfemi")
    groups = optimizer_groups(model, model.backbone, 1e-6, 1e-4, 0.2)
    seen = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(id(p) for p in trainable)  # each exactly once
    decay = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[i] for i in seen if i not in decay}
    for name in ("loss.logit_scale", "text_enhance.gate", "temporal.position.weight",
                 "backbone.clip.positional_embedding", "backbone.clip.ln_final.weight",
                 "backbone.clip.ln_final.bias", "interaction.q.bias"):
        assert name in undecayed, name
    assert "interaction.q.weight" not in undecayed
    assert "backbone.clip.token_embedding.weight" not in undecayed
    backbone = {id(p) for p in model.backbone.parameters()}
    gates = {id(model.fine_gate), id(model.text_enhance.gate)}
    for group in groups:
        kind = {"backbone" if id(p) in backbone else "gate" if id(p) in gates else "new"
                for p in group["params"]}
        assert len(kind) == 1
        rates = {"backbone": 1e-6, "gate": 1e-4 * GATE_LR_SCALE, "new": 1e-4}
        assert group["lr"] == rates[kind.pop()]
    assert {id(p) for g in groups if g["lr"] == 1e-4 * GATE_LR_SCALE for p in g["params"]} == gates


def test_random_shift_moves_a_whole_clip_together():
    """One offset per video: a shape keeps its path from frame to frame, only displaced."""
    frames = torch.zeros(3, 4, 3, 16, 16)
    for t in range(4):  # a bright pixel moving right, one pixel per frame
        frames[:, t, :, 8, 4 + t] = 1.0
    shifted = random_shift(frames, 3, torch.Generator().manual_seed(0))
    assert shifted.shape == frames.shape
    moved = set()
    for video in shifted:
        spots = [tuple(torch.nonzero(video[t, 0] == 1.0)[0].tolist()) for t in range(4)]
        assert [x - spots[0][1] for _, x in spots] == [0, 1, 2, 3]  # the same motion
        assert len({y for y, _ in spots}) == 1
        moved.add(spots[0])
        assert abs(spots[0][0] - 8) <= 3 and abs(spots[0][1] - 4) <= 3
    assert len(moved) > 1  # videos get their own offsets
    assert torch.equal(random_shift(frames, 0), frames)


def test_random_placement_puts_a_clip_among_still_frames_in_order():
    """A chosen clip keeps its frames in order at some offset; the slots around it are its
    own first and last frames held, or the blank frame, and become real; others stay put."""
    frames = torch.zeros(64, 8, 3, 2, 2)
    frames[:, :5] = torch.arange(1, 6, dtype=torch.float).view(1, 5, 1, 1, 1)
    mask = torch.zeros(64, 8, dtype=torch.bool)
    mask[:, :5] = True
    frames[-1], mask[-1] = 7.0, True  # a clip that fills every slot has no room to move
    blank = torch.full((3, 2, 2), -1.0)
    placed, placed_mask = random_placement(frames, mask, blank, 0.5,
                                           torch.Generator().manual_seed(0))
    moved, offsets, kinds = 0, set(), set()
    for video, real in zip(placed[:-1], placed_mask[:-1], strict=True):
        values = video[:, 0, 0, 0].tolist()
        n = int(real.sum())
        assert real[:n].all() and not real[n:].any() and 5 <= n <= 8
        assert video[n:].eq(0).all()  # padding past the filled slots is untouched
        if n == 5:
            assert values[:5] == [1, 2, 3, 4, 5]
            continue
        moved += 1
        start = next(i for i in range(n - 4) if values[i:i + 5] == [1, 2, 3, 4, 5])
        before, after = values[:start], values[start + 5:n]
        held = all(v == 1 for v in before) and all(v == 5 for v in after)
        black = all(v == -1 for v in before + after)
        assert held or black
        offsets.add(start)
        kinds.add("held" if held else "black")
    assert 16 < moved < 48  # about half of the clips
    assert len(offsets) > 2 and kinds == {"held", "black"}
    assert torch.equal(placed[-1], frames[-1]) and placed_mask[-1].all()
    assert random_placement(frames, mask, blank, 0.0)[0] is frames


def test_the_package_root_is_the_front_door_and_thinning_needs_no_torch():
    import subprocess
    import sys

    import vtr_models

    for name in vtr_models.__all__:  # every export resolves to the object it names
        assert getattr(vtr_models, name) is not None, name
    assert vtr_models.create_model is create_model
    assert vtr_models.load_checkpoint is load_checkpoint
    with pytest.raises(AttributeError):
        vtr_models.no_such_name  # noqa: B018
    # ingest's decoder processes import the thinning alone: torch stays out of them
    code = ("import sys, vtr_models.frame_thinning; "
            "sys.exit('torch' in sys.modules or 'open_clip' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_model_configs_are_frozen_and_round_trip_through_one_encoding():
    import dataclasses

    from vtr_models.model_config import ModelConfig, model_config

    for name in MODEL_CONFIGS:
        config = model_config(name, backbone="vtr-tiny-p8", max_frames=7)
        values = config.to_dict()
        assert values["name"] == name and values["max_frames"] == 7
        again = ModelConfig.from_dict(values)
        assert again == config and type(again) is type(config)
        assert hash(again) == hash(config)  # data loading caches preprocessors by config
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.max_frames = 3
    assert ModelConfig.from_dict({"name": "meanp"}) == model_config("meanp")
    # a checkpoint saved before motion frames were lfemi's default did not train them
    old = {k: v for k, v in model_config("lfemi").to_dict().items() if k != "motion"}
    assert ModelConfig.saved(old) == model_config("lfemi", motion=False)
    assert ModelConfig.from_dict(old).motion  # a partial config takes today's defaults
    assert ModelConfig.saved(model_config("lfemi").to_dict()).motion
    with pytest.raises(ValueError, match="unknown model setting"):
        ModelConfig.from_dict({"name": "lfemi", "no_such_setting": 1})
