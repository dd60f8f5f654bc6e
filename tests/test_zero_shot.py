"""Search without training: a backbone spec with weights stands where a checkpoint goes.

The weights file is saved from a tiny config here (no model hub), so open_clip's
load-from-file path runs as it does for ``ViT-B-32:/models/clip.bin``.
"""

from __future__ import annotations

import json
import logging

import lancedb
import pytest
import torch
from conftest import make_checkpoint, run, save_clip_weights

from pipelines.embed import warn_untrained_first_stage
from pipelines.index.search import VideoSearch
from pipelines.ingestion.output import open_ingest
from vtr_models import BackboneLoadError, create_model, model_id, open_model, save_checkpoint


def test_a_spec_opens_the_untrained_full_model_on_its_weights(clip_spec, tmp_path):
    model, first_id = open_model(clip_spec)
    assert model.config.name == "lfemi" and model.config.backbone == clip_spec
    assert not model.training
    weights = torch.load(clip_spec.split(":", 1)[1], weights_only=True)
    for name, tensor in model.backbone.clip.state_dict().items():
        assert torch.equal(tensor, weights[name]), name  # the file's weights, not random
    # the random draws beyond the backbone add nothing at initialisation: same id
    torch.manual_seed(123)
    assert open_model(clip_spec)[1] == first_id == model_id(clip_spec)
    other = save_clip_weights(tmp_path / "other.pt", seed=6)
    assert model_id(other) != first_id


def test_a_spec_ranks_as_clip_mean_pooling(clip_spec):
    """The zero-shot model's full score is the cosine of the caption with the mean CLIP
    frame feature, the ranking clip-retrieval gives, and its first-stage score the same."""
    model, _ = open_model(clip_spec)
    meanp = create_model("meanp", backbone=clip_spec).eval()
    frames = torch.randn(3, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1, 4:] = False
    tokens = model.tokenizer.captions(["a red circle moves left", "a blue square", "a dog"])
    keywords, keyword_mask = model.tokenizer.keywords([["red circle"], ["square"], []], 5)
    with torch.no_grad():
        text = model.encode_text(tokens, keywords, keyword_mask)
        video = model.encode_video(frames, mask)
        expected = meanp.score(meanp.encode_text(tokens), meanp.encode_video(frames, mask))
        torch.testing.assert_close(model.score(text, video), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.first_stage_score(text, video), expected,
                                   atol=1e-6, rtol=0)


def test_a_spec_without_weights_or_with_a_missing_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="NAME:PRETRAINED"):
        open_model("vtr-tiny")  # random weights would rank at random: never silently
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        open_model(str(tmp_path))  # a folder that holds no checkpoint
    with pytest.raises(BackboneLoadError, match="cannot load the checkpoint file"):
        open_model(f"vtr-tiny:{tmp_path / 'missing.pt'}")


def test_embed_warns_when_the_first_stage_was_not_trained(tmp_path, caplog):
    torch.manual_seed(0)
    model = create_model("meanp")
    for weight in (0.0, 0.5):
        save_checkpoint(model, tmp_path / str(weight), {"first_stage_loss": weight})
    make_checkpoint(tmp_path / "untracked", seed=0)  # saved outside training: no record
    with caplog.at_level(logging.WARNING, logger="embed"):
        for folder in ("0.0", "0.5", "untracked"):
            warn_untrained_first_stage(str(tmp_path / folder))
    warned = [r.getMessage() for r in caplog.records if r.name == "embed"]
    assert len(warned) == 1 and "without a first-stage loss" in warned[0]
    assert str(tmp_path / "0.0") in warned[0]


def test_search_an_archive_zero_shot_then_with_a_trained_checkpoint(
        synthetic_data, clip_spec, keyword_model, tmp_path):
    """embed, query, VideoSearch and evaluate take the spec; the table records the
    zero-shot model, every result's full score equals its first-stage cosine (the
    untrained full model is CLIP mean pooling), and a checkpoint later rebuilds the
    table as any new checkpoint does."""
    db = str(tmp_path / "db")
    embed = ["pipelines/embed.py", "--data", str(synthetic_data), "--db", db,
             "--table", "videos", "--batch-size", "4"]
    result = run([*embed, "--checkpoint", clip_spec])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = lancedb.connect(db).open_table("videos").to_arrow()
    ingest = open_ingest(str(synthetic_data)).dataset("videos").count_rows()
    assert rows.num_rows == ingest and set(rows.column("model_id").to_pylist()) == {
        model_id(clip_spec)}

    result = run(["pipelines/query.py", "--db", db, "--table", "videos", "--checkpoint", clip_spec,
                  "--text", "a red circle moves left", "--k", "5", "--candidates", "10",
                  "--json", "--keyword-model", keyword_model])
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)
    assert len(records) == 5
    for record in records:
        assert abs(record["score"] - record["first_stage_score"]) < 1e-3  # float16 features
    search = VideoSearch(db, "videos", clip_spec, keyword_model=keyword_model)
    answer = search.search("a red circle moves left", k=5, candidates=10)
    assert answer["video_id"].tolist() == [r["video_id"] for r in records]

    metrics = tmp_path / "zero_shot.json"
    result = run(["pipelines/evaluate.py", "--data", str(synthetic_data), "--checkpoint", clip_spec,
                  "--split", "test", "--json", str(metrics)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(metrics.read_text())["num_videos"] == 6

    trained = make_checkpoint(tmp_path / "trained", seed=2)
    result = run([*embed, "--checkpoint", str(trained), "--update"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = lancedb.connect(db).open_table("videos").to_arrow()
    assert rows.num_rows == ingest
    assert set(rows.column("model_id").to_pylist()) == {model_id(str(trained))}
