"""Seeds 001/003: caption tags at three levels, focal BCE, the tag KL, the levels' pooling and
score, and a training run that mines the tags and stores them in the checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run

from vtr_models import create_model, load_checkpoint
from vtr_models.loss import focal_binary_cross_entropy
from vtr_models.semantic_levels import AttentionPool
from vtr_models.tags import TAG_LEVELS, caption_tags, tag_targets, tag_vocabulary

KNOWN = {
    "a red circle slides to the left, then a blue square goes upward": (
        ["red", "circle", "blue", "square"], ["slide", "go"], ["to", "left", "then", "up"]),
    "A dog catches a frisbee on the beach": (["dog", "frisbee", "beach"], ["catch"], ["on"]),
    "two red circles move in the park": (["red", "circle", "park"], ["move"], ["in"]),
    "the guitar player sings": (["guitar", "player"], ["sing"], []),
    "the purple circle travels to the left, and next the cyan circle slides upwards": (
        ["purple", "circle", "cyan"], ["travel", "slide"], ["to", "left", "next", "up"]),
    "a woman cooks pasta in a kitchen while a child watches": (
        ["woman", "pasta", "kitchen", "child"], ["cook", "watch"], ["in", "while"]),
}


@pytest.mark.parametrize("caption", KNOWN)
def test_caption_tags_at_three_levels(caption):
    assert caption_tags(caption) == dict(zip(TAG_LEVELS, KNOWN[caption], strict=True))


def test_vocabulary_counts_captions_and_targets_are_multi_hot():
    captions = ["a dog runs", "two dogs run to the left", "a cat sleeps", "the dog jumps left"]
    vocab = tag_vocabulary(captions, 2)
    assert vocab == (("dog", "cat"), ("run", "jump"), ("left", "to"))  # ties alphabetical
    assert tag_targets("a cat runs to the left", vocab) == [0, 1, 1, 0, 1, 1]
    levels = ("action",)
    assert tag_vocabulary(captions, 5, levels) == (("run", "jump", "sleep"),)
    assert tag_targets("a dog sleeps", ((("run", "sleep")),), levels) == [0, 1]


def test_focal_bce_is_its_definition():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 4.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    gamma = 2.0
    expected = []
    for x, y in zip(logits.flatten().tolist(), targets.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-x))
        p_true = p if y else 1 - p
        expected.append(-((1 - p_true) ** gamma) * math.log(p_true))
    torch.testing.assert_close(focal_binary_cross_entropy(logits, targets, gamma),
                               torch.tensor(sum(expected) / len(expected)))
    torch.testing.assert_close(focal_binary_cross_entropy(logits, targets, 0.0),
                               F.binary_cross_entropy_with_logits(logits, targets))


def test_attention_pool_weights_valid_positions_by_their_softmax():
    torch.manual_seed(0)
    pool = AttentionPool(4)
    x, mask = torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]).bool()
    out = pool(x, mask)
    for b in range(2):
        valid = x[b][mask[b]]
        weights = torch.softmax(torch.stack([pool.query.weight[0] @ torch.tanh(pool.key(v))
                                             for v in valid]), 0)
        torch.testing.assert_close(out[b], (weights[:, None] * valid).sum(0))


VOCAB = (("red", "circle", "square"), ("slide", "go"), ("left", "then", "up"))


def test_levels_start_closed_and_their_loss_is_fbce_plus_weighted_kl():
    """An untrained model with semantic levels scores as without them; its auxiliary loss
    is, per level, FBCE of both modalities' shared-projection logits plus tag_kl times the
    symmetric KL of their softmax tag distributions."""
    torch.manual_seed(0)
    model = create_model("meanp", semantic_levels=TAG_LEVELS, tag_vocab=VOCAB).eval()
    torch.manual_seed(0)
    plain = create_model("meanp").eval()
    plain.backbone.load_state_dict(model.backbone.state_dict())
    captions = ["a red circle slides to the left, then a blue square goes upward", "b", "c"]
    tokens = model.tokenizer.captions(captions)
    frames, mask = torch.randn(3, 4, 3, 64, 64), torch.ones(3, 4, dtype=torch.bool)
    with torch.no_grad():
        text, video = model(frames, mask, tokens)
        torch.testing.assert_close(model.score(text, video),
                                   plain.score(*plain(frames, mask, tokens)), atol=1e-6, rtol=0)
        tags = torch.tensor([tag_targets(c, VOCAB) for c in captions])
        expected = 0.0
        for level, t, v, target in zip(model.semantic, model.text_vectors(text),
                                       model.video_vectors(video), tags.split([3, 2, 3], 1),
                                       strict=True):
            lt, lv = level.project(t), level.project(v)
            pt, pv = lt.softmax(-1), lv.softmax(-1)
            kl = ((pv * (pv / pt).log()).sum(-1) + (pt * (pt / pv).log()).sum(-1)).mean() / 2
            expected += (focal_binary_cross_entropy(lt, target)
                         + focal_binary_cross_entropy(lv, target) + 0.1 * kl)
        torch.testing.assert_close(model.auxiliary_loss(text, video, tags), expected)
    assert tags[0].tolist() == [1, 1, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="tags"):
        model.auxiliary_loss(text, video)
    with pytest.raises(ValueError, match="tag_vocab"):
        create_model("meanp", semantic_levels=("entity",))
    with pytest.raises(ValueError, match="unknown semantic level"):
        create_model("meanp", semantic_levels=("colour",), tag_vocab=(("red",),))
    with pytest.raises(ValueError, match="repeat"):
        create_model("meanp", semantic_levels=("entity", "entity"), tag_vocab=(("a",), ("b",)))
    with pytest.raises(ValueError, match="action have no tags"):
        create_model("meanp", semantic_levels=("entity", "action"), tag_vocab=(("dog",), ()))


def test_training_mines_tags_into_the_checkpoint(synthetic_data, tmp_path):
    """``--semantic-levels`` with ``--model rrn``, after seed 004's pre-training: the run
    mines each level's tags from the training captions, pre-trains on them and the
    masked words, trains, and its checkpoint rebuilds the same model and records the
    pre-training."""
    output = tmp_path / "run"
    result = run(["pipelines/train.py", "--data", str(synthetic_data), "--checkpoint",
                  str(output), "--max-frames", "8", "--batch-size", "8", "--epochs", "1",
                  "--model", "rrn", "--semantic-levels", "entity,relationship",
                  "--tag-vocab-size", "4", "--cpus-per-worker", "0.5",
                  "--pretrain-tasks", "tap,mlm", "--pretrain-epochs", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrain epoch 1/1 (tap, mlm): loss" in result.stdout + result.stderr
    training = json.loads((output / "final" / "training.json").read_text())
    assert training["pretrain_tasks"] == ["tap", "mlm"] and training["pretrain_epochs"] == 1
    config = json.loads((output / "final" / "config.json").read_text())
    assert config["semantic_levels"] == ["entity", "relationship"] and config["relations"]
    entity, relationship = config["tag_vocab"]
    assert len(entity) == 4 and {"circle", "square"} & set(entity)
    assert len(relationship) == 4 and {"left", "right", "up", "down"} & set(relationship)
    model = load_checkpoint(output / "final")
    assert model.config.tag_vocab == (tuple(entity), tuple(relationship))
    assert [level.project.out_features for level in model.semantic] == [4, 4]
    assert all(level.gate.item() != 0 for level in model.semantic)  # trained, not dead
    refused = run(["pipelines/train.py", "--data", str(synthetic_data), "--checkpoint",
                   str(tmp_path / "other"), "--semantic-levels", "colour"])
    assert refused.returncode != 0 and "unknown level(s) colour" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = run(["pipelines/train.py", "--data", str(synthetic_data), "--checkpoint",
                   str(tmp_path / "other"), "--pretrain-tasks", "tap"])
    assert refused.returncode != 0 and "needs the tags of --semantic-levels" in refused.stderr
