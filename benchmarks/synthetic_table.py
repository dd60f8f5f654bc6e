"""The synthetic benchmark table: baselines, the full model and its ablations, side by side.

    python benchmarks/synthetic_table.py --workdir bench/ [--train-groups 1000] [--epochs 60] \\
        [--hard-negatives 5] [--runs meanp,seqtransf,lfemi,...]

Generates the order-only clips (``pipelines/synthetic.py``) and ingests them
once into ``WORKDIR``, then for each run trains with ``pipelines/train.py``
(same data, flags and seed for every model; a run whose ``final/`` exists is
not trained again), evaluates the best epoch on the
test split (``pipelines/evaluate.py``) and splits its errors into wrong group
and wrong order (``within_group.py``). Prints one JSON object and the README's
markdown table; each run's outputs stay in ``WORKDIR/ckpt-RUN``, so an
interrupted table resumes. ``epochs, min`` is the sum of the epochs' training
and validation time (Ray's start-up and the data's first pass left out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench_data import REPO

from pipelines.samples import bundled_minilm
from pipelines.synthetic import generate

RUNS = {
    "meanp": ["--model", "meanp"],
    "seqtransf": ["--model", "seqtransf"],
    "lfemi": ["--model", "lfemi"],
    "lfemi -video_enhance": ["--model", "lfemi", "--disable", "video_enhance"],
    "lfemi -text_enhance": ["--model", "lfemi", "--disable", "text_enhance"],
    "lfemi -interaction": ["--model", "lfemi", "--disable", "interaction"],
    "lfemi -fine_grained": ["--model", "lfemi", "--disable", "fine_grained"],
    # not an ablation: the full model plus the first-stage loss (see "Through the index")
    "lfemi +first_stage_loss": ["--model", "lfemi", "--first-stage-loss", "0.5"],
}


def script(args: list[str]) -> str:
    """Run a repository script; its stdout."""
    return subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout


def prepare(workdir: Path, train_groups: int) -> Path:
    data = workdir / "ingest"
    if not (data / "_ingest_log").exists():
        manifest = generate(workdir / "synthetic", train_groups=train_groups, val_groups=33,
                            test_groups=33)
        script(["pipelines/ingest.py", "--manifest", str(manifest), "--output", str(data),
                "--frame-size", "64", "--keyword-model", str(bundled_minilm()), "--overwrite"])
    return data


def run(name: str, data: Path, workdir: Path, args) -> dict:
    output = workdir / ("ckpt-" + name.replace(" ", "").replace("-", "-no-").replace("+", "-with-"))
    result_file = output / "table_row.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    if not (output / "final").exists():  # a trained run is only evaluated
        script(["pipelines/train.py", "--data", str(data), "--output", str(output),
                *RUNS[name], "--max-frames", "8", "--epochs", str(args.epochs),
                "--batch-size", "32", "--lr", str(args.lr), "--cpus-per-worker", str(args.cpus),
                "--checkpoint-every", "10", "--hard-negatives", str(args.hard_negatives)])
    test = output / "test.json"
    script(["pipelines/evaluate.py", "--data", str(data), "--checkpoint", str(output / "final"),
            "--split", "test", "--json", str(test)])
    groups = json.loads(script(["benchmarks/within_group.py", "--data", str(data),
                                "--checkpoint", str(output / "final")]))
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["val_t2v_R@1"], r["epoch"]))
    epochs_s = sum(r["train_s"] + r["val_s"] for r in rows)  # without Ray's start-up
    row = {"run": name, "train_minutes": round(epochs_s / 60, 1), "best_epoch": best["epoch"],
           "test": json.loads(test.read_text()), "within_group": groups,
           "final_loss": rows[-1]["loss"]}
    result_file.write_text(json.dumps(row))
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| run | test t2v R@1 | R@5 | MdR | within-group acc. (chance 33.3) | top-1 in group "
             "| best epoch | epochs, min |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t2v, wg = r["test"]["t2v"], r["within_group"]["full"]
        lines.append(f"| `{r['run']}` | {t2v['R@1']:.1f} | {t2v['R@5']:.1f} | {t2v['MdR']:g} "
                     f"| {wg['within_group_accuracy']:.1f} | {wg['top1_in_group']:.1f} "
                     f"| {r['best_epoch']} | {r['train_minutes']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data and checkpoints go here")
    parser.add_argument("--train-groups", type=int, default=1000,
                        help="synthetic training groups of 3 clips (val and test: 33 each)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs of every run")
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of every run")
    parser.add_argument("--hard-negatives", type=int, default=5,
                        help="train.py --hard-negatives of every run (0: random batches)")
    parser.add_argument("--cpus", type=float, default=2,
                        help="train.py --cpus-per-worker of every run")
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated subset of: {', '.join(RUNS)}")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare(workdir, args.train_groups)
    rows = [run(name.strip(), data, workdir, args) for name in args.runs.split(",")]
    print(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
