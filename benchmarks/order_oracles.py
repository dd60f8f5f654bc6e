"""Why no model learns order on the synthetic benchmark: each encoder swapped for an oracle.

    python benchmarks/order_oracles.py --data bench/ingest [--text-oracle] [--frame-oracle] \\
        [--backbone vtr-tiny-p8 --lr 3e-4] [--lr-clip 1e-5] [--seed 0] [--epochs 30]
    python benchmarks/order_oracles.py --data bench/ingest --frame-oracle --lr 1e-3 \\
        --text-minilm frozen   # or: --text-minilm tuned --lr-clip 1e-5

Trains ``lfemi`` in one process the way ``pipelines/train.py`` does at its
defaults (random batches of 32 caption pairs, the same AdamW groups and weight
decay, linear warm-up then cosine decay, gradient clip 1), with either encoder
replaced by one that is handed what the other must match:

- ``--text-oracle``: captions parsed back into their two motions (colour,
  shape, direction, in the order they happen) and encoded from six learned
  slot embeddings. Word order, paraphrases and binding are solved for it; the
  model still has to learn what the words mean in pixels.
- ``--text-minilm tuned|frozen``: not an oracle but a pretrained language model:
  the sentence model KeyBERT ships with (all-MiniLM-L6-v2, bundled offline) in
  place of the text tower, its token features and their mean each through a
  learned linear map, its own weights at ``--lr-clip`` or frozen. Whether a
  tower pretrained on a billion sentence pairs brings the binding and order
  that the random-init one lacks.
- ``--frame-oracle``: frame features from the frame's pixels pooled to 16x16
  and a two-layer MLP, in place of the image tower. Where each shape is
  stays in the input; a ViT's class token must learn to keep it.

Every ``--eval-every`` epochs it prints one JSON line: the training loss and
``benchmarks/within_group.py``'s breakdown (R@1, top-1 in group, within-group
accuracy) on the training and test splits. Within-group accuracy on the
*training* split says whether the model fits order at all; on the test split,
whether what it learned carries to unseen groups.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time

import torch
import torch.nn.functional as F
from torch import nn
from within_group import breakdown

from pipelines.ingestion.output import read_captions
from pipelines.sources.samples import bundled_minilm
from pipelines.sources.synthetic import COLORS, DIRECTION_PHRASES, SHAPES
from pipelines.training.evaluation import SplitInputs, encode_split, load_split
from pipelines.training.loop import cosine_with_warmup, first_occurrences
from vtr_models import RetrievalModel, TextFeatures, create_model, optimizer_groups

WORDS = [*COLORS, *SHAPES, *DIRECTION_PHRASES]  # the oracle's vocabulary: 8 + 3 + 4
DIRECTION_OF = {phrase: d for d, phrases in DIRECTION_PHRASES.items() for phrase in phrases}
PHRASE = (rf"(?:an?|the) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) \w+ "
          rf"({'|'.join(sorted(DIRECTION_OF, key=len, reverse=True))})")


def motions(caption: str) -> list[int]:
    """A synthetic caption's two motions as six word indices into ``WORDS`` (colour,
    shape, direction of the first motion, then of the second), whatever the wording:
    "{second} after {first}" is the one joiner that says the second motion first."""
    found = re.findall(PHRASE, caption)
    if len(found) != 2:
        raise ValueError(f"not a synthetic benchmark caption: {caption!r}")
    if re.fullmatch(rf"{PHRASE} after {PHRASE}", caption):
        found.reverse()
    return [WORDS.index(w) for color, shape, phrase in found
            for w in (color, shape, DIRECTION_OF[phrase])]


class TextOracle(nn.Module):
    """Caption features from the parsed motions: a learned embedding per word and slot."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.words = nn.Embedding(len(WORDS), dim)
        self.slots = nn.Parameter(torch.randn(6, dim) * 0.02)
        self.mix = nn.Sequential(nn.Linear(6 * dim, 256), nn.GELU(), nn.Linear(256, dim))

    def forward(self, slots: torch.Tensor, *_) -> TextFeatures:
        tokens = self.words(slots) + self.slots
        return TextFeatures(self.mix(tokens.flatten(1)), tokens, torch.ones_like(slots, dtype=bool))


class FrameOracle(nn.Module):
    """Frame features from pixels pooled to 16x16: where each shape is, kept."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * 16 * 16, 256), nn.GELU(), nn.Linear(256, dim))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        pooled = F.adaptive_avg_pool2d(frames.flatten(0, 1), 16).flatten(1)
        return self.mlp(pooled).view(b, t, -1) * mask[..., None]


def split_captions(data: str, name: str, inputs: SplitInputs) -> list[str]:
    """Split ``name``'s caption texts, in the order of its loaded ``inputs``."""
    captions = read_captions(data, name)
    if captions.column("video_id").to_pylist() != inputs.text_video_ids:
        raise ValueError(f"split {name!r}: captions out of the order load_split gave")
    return captions.column("caption").to_pylist()


def use_text_oracle(model: RetrievalModel, data: str, splits: dict[str, SplitInputs]) -> None:
    """Replace the text encoder; each split's captions become their parsed motions."""
    model.text_oracle = TextOracle(model.backbone.embed_dim)  # a submodule: trained
    # in the instance's __dict__, which attribute lookup reads before the class's method
    object.__setattr__(model, "encode_text", model.text_oracle)
    for name, inputs in splits.items():
        slots = torch.tensor([motions(c) for c in split_captions(data, name, inputs)])
        inputs.text_batches = [(slots, None, None)]


class MiniLMText(nn.Module):
    """Caption features from a pretrained sentence model: its tokens and their mean, mapped."""

    def __init__(self, language_model: nn.Module, dim: int) -> None:
        super().__init__()
        # kept out of this module's parameters: they are the backbone's (its learning rate)
        self.language_model = [language_model]
        self.words = nn.Linear(language_model.config.hidden_size, dim)
        self.sentence = nn.Linear(language_model.config.hidden_size, dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, *_) -> TextFeatures:
        hidden = self.language_model[0](input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask[..., None].float()
        mean = (hidden * weights).sum(1) / weights.sum(1)
        return TextFeatures(self.sentence(mean), self.words(hidden), mask.bool())


def use_text_minilm(model: RetrievalModel, data: str, splits: dict[str, SplitInputs],
                    frozen: bool) -> None:
    """Replace the text tower by the bundled all-MiniLM-L6-v2; captions get its tokenizer."""
    from transformers import AutoModel, AutoTokenizer

    folder = bundled_minilm()
    tokenizer, language_model = (AutoTokenizer.from_pretrained(folder),
                                 AutoModel.from_pretrained(folder))
    language_model.requires_grad_(not frozen)
    model.backbone.language_model = language_model  # trained at --lr-clip
    model.minilm_text = MiniLMText(language_model, model.backbone.embed_dim)
    object.__setattr__(model, "encode_text", model.minilm_text)
    for name, inputs in splits.items():
        encoded = tokenizer(split_captions(data, name, inputs), padding=True,
                            truncation=True, max_length=32, return_tensors="pt")
        inputs.text_batches = [(encoded["input_ids"], encoded["attention_mask"])]


def use_frame_oracle(model: RetrievalModel) -> None:
    model.frame_oracle = FrameOracle(model.backbone.embed_dim)
    object.__setattr__(model.backbone, "encode_frames", model.frame_oracle)


def evaluate(model: RetrievalModel, inputs: SplitInputs) -> dict:
    text, video = encode_split(model, inputs)
    with torch.no_grad():
        return breakdown(model.score(text, video), inputs.text_video_ids, inputs.video_ids)


def train(model: RetrievalModel, inputs: SplitInputs, test: SplitInputs, args) -> None:
    """``pipelines/train.py``'s schedule on the training split, in memory, one process."""
    frames, frame_mask = inputs.video_batches[0]
    tokens, *keywords = inputs.text_batches[0]
    keywords = [] if keywords[0] is None else keywords
    column = {video_id: i for i, video_id in enumerate(inputs.video_ids)}
    video_of = torch.tensor([column[v] for v in inputs.text_video_ids])
    steps_per_epoch = math.ceil(len(video_of) / args.batch_size)
    total = args.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        optimizer_groups(model, model.backbone, args.lr_clip or args.lr, args.lr, 0.2))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total, int(0.1 * total)))
    order = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for batch in torch.randperm(len(video_of), generator=order).split(args.batch_size):
            keys = video_of[batch]
            videos = keys[first_occurrences(keys)]
            text = model.encode_text(tokens[batch], *(k[batch] for k in keywords))
            video = model.encode_video(frames[videos], frame_mask[videos])
            loss = model.loss(model.score(text, video, chunk_size=len(batch)), keys, videos)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            print(json.dumps({"epoch": epoch, "loss": round(sum(losses) / len(losses), 3),
                              "train": evaluate(model, inputs), "test": evaluate(model, test),
                              "seconds": round(time.perf_counter() - started)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="ingest output of the synthetic benchmark")
    texts = parser.add_mutually_exclusive_group()
    texts.add_argument("--text-oracle", action="store_true", help="captions parsed, not read")
    texts.add_argument("--text-minilm", choices=["tuned", "frozen"], default=None,
                       help="the bundled pretrained all-MiniLM-L6-v2 as the text tower, "
                            "trained at --lr-clip or frozen")
    parser.add_argument("--frame-oracle", action="store_true", help="pooled pixels, not a ViT")
    parser.add_argument("--model", default="lfemi", help="model config name")
    parser.add_argument("--backbone", default="vtr-tiny", help="open_clip config (random init)")
    parser.add_argument("--lr", type=float, default=1e-4, help="learning rate of every part")
    parser.add_argument("--lr-clip", type=float, default=None,
                        help="learning rate of the backbone's towers (default: --lr), e.g. "
                             "lower for one pretrained with benchmarks/pretrain_stills.py")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=32, help="caption pairs per batch")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between evaluations")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    model = create_model(args.model, backbone=args.backbone)
    splits = {"train": load_split(model, args.data, "train", batch_size=1 << 20),
              "test": load_split(model, args.data, "test")}
    if args.text_oracle:
        use_text_oracle(model, args.data, splits)
    if args.text_minilm:
        use_text_minilm(model, args.data, splits, frozen=args.text_minilm == "frozen")
    if args.frame_oracle:
        use_frame_oracle(model)
    train(model, splits["train"], splits["test"], args)


if __name__ == "__main__":
    main()
