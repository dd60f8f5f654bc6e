"""The synthetic benchmark table: baselines, the full model and its ablations, over seeds.

    python benchmarks/synthetic_table.py --workdir bench-easy/ --tier easy [--seeds 0,1,2] \\
        [--epochs 30] [--backbone vtr-128-p8] [--runs meanp,lfemi,...] [--train-flags "..."]

Generates the order-only clips of one tier (``pipelines/sources/synthetic.py``)
and ingests them once into ``WORKDIR``, then for each run and seed trains with
``pipelines/train.py`` at its default flags (plus ``--backbone``, ``--epochs``,
``--seed``, the run's own flags and ``--train-flags``), evaluates the best
validation epoch on the test split (``pipelines/evaluate.py``), splits its
errors into wrong group and wrong order (``within_group.py``), and searches
the test videos through a LanceDB table as a user would (``embed.py``, then
``evaluate.py --via-index --candidates 10``). Ties count against the query
everywhere. Prints one JSON object (every seed's figures) and
docs/synthetic-benchmark.md's markdown table (mean ± standard deviation over
the seeds). A run is named by its model and what it changes from train.py's
defaults (``lfemi +shift -temporal``: see ``FLAG_SETS``). Each trained
run stays in ``WORKDIR/ckpt-RUN-sSEED``, so an interrupted table resumes.
``--parallel 2`` trains two runs at a time, each on half of ``--cpus``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_data import script

from pipelines.sources.samples import bundled_minilm
from pipelines.sources.synthetic import TIERS, generate
from pipelines.train import EXTRA_PARTS, PARTS
from vtr_models.model_config import MODEL_CONFIGS

# A run is named by its model and what it changes, as the docs' tables label it:
# "lfemi +shift +mined_negatives". "-PART" switches off a part the model has
# (train.py's --disable), "+PART" switches one on (--enable); the rest name flag sets.
FLAG_SETS = {
    # every training clip's frames moved by one random offset (no place to memorise)
    "+shift": ["--augment-shift", "0.15"],
    # a third of the step between a motion's held positions (0.15 of the frame, as +shift):
    # where a shape is along its path still shows, a clip's exact place does not
    "+small_shift": ["--augment-shift", "0.05"],
    "-first_stage_loss": ["--first-stage-loss", "0"],
    # batches of each caption's nearest captions, so that group-mates meet
    "+hard_negatives": ["--hard-negatives", "5"],
    # batches of each clip's nearest clips by the model's own video vectors, mined each
    # epoch: on this benchmark, its group-mates (caption TF-IDF rarely finds them)
    "+mined_negatives": ["--hard-negatives", "5", "--hard-negatives-by", "videos"],
    # seeds 001/003: entity, action and relationship similarities trained on caption tags
    "+semantic": ["--semantic-levels", "entity,action,relationship"],
    # half the clips at a random offset among still frames, as in a long video's window
    "+placement": ["--augment-placement", "0.5"],
    # the recipe before the reference's: learning rate 1e-4, weight decay 0.2
    "old-recipe": ["--lr", "1e-4", "--weight-decay", "0.2"],
    "vtr-tiny": ["--backbone", "vtr-tiny"],
}
#: what the table runs unless --runs says otherwise: the baseline, the full model at its
#: defaults, and each of its parts switched off
DEFAULT_RUNS = ["meanp", "lfemi", *(f"lfemi -{part}" for part in PARTS)]


def run_flags(name: str) -> list[str]:
    """train.py's flags for the run ``name`` (ValueError naming a word it cannot read)."""
    model, *changes = name.split()
    if model not in MODEL_CONFIGS:
        raise ValueError(f"run {name!r}: {model!r} is not a model ({', '.join(MODEL_CONFIGS)})")
    flags, parts = ["--model", model], {"-": [], "+": []}
    for change in changes:
        if change in FLAG_SETS:
            flags += FLAG_SETS[change]
        elif change[:1] in parts and change[1:] in PARTS + EXTRA_PARTS:
            parts[change[0]].append(change[1:])
        else:
            raise ValueError(f"run {name!r}: cannot read {change!r}; use -PART or +PART "
                             f"({', '.join(PARTS + EXTRA_PARTS)}) or one of "
                             f"{', '.join(FLAG_SETS)}")
    for sign, flag in (("-", "--disable"), ("+", "--enable")):
        if parts[sign]:
            flags += [flag, ",".join(parts[sign])]
    return flags


CANDIDATES = 10  # searched through the index, of the 99 test videos
COLUMNS = {  # column title -> where the figure is in a seed's result
    "test t2v R@1": ("test", "t2v", "R@1"),
    "R@5": ("test", "t2v", "R@5"),
    "MdR": ("test", "t2v", "MdR"),
    "within-group acc. (chance 33.3)": ("within_group", "full", "within_group_accuracy"),
    "top-1 in group": ("within_group", "full", "top1_in_group"),
    "R@1 via index (10 cand.)": ("via_index", "t2v", "R@1"),
    "train min": ("train_minutes",),
}


def prepare(workdir: Path, train_groups: int, tier: str) -> Path:
    data = workdir / "ingest"
    if not (data / "_ingest_log").exists():
        manifest = generate(workdir / "synthetic", train_groups=train_groups, val_groups=33,
                            test_groups=33, tier=tier)
        script(["pipelines/ingest.py", "--manifest", str(manifest), "--data", str(data),
                "--frame-size", "64", "--keyword-model", str(bundled_minilm()), "--overwrite"])
    return data


def run_seed(name: str, seed: int, data: Path, workdir: Path, args, cpus: float) -> dict:
    """Train, evaluate and break down one run at one seed (or read its earlier result)."""
    slug = name.replace(" ", "").replace("-", "-no-")
    output = workdir / f"ckpt-{slug}-s{seed}"
    result_file = output / "table_row.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    if not (output / "final").exists():  # a trained run is only evaluated
        script(["pipelines/train.py", "--data", str(data), "--checkpoint", str(output),
                "--backbone", args.backbone, *run_flags(name), "--epochs", str(args.epochs),
                "--seed", str(seed),
                "--cpus-per-worker", str(cpus), *shlex.split(args.train_flags)])
    test = output / "test.json"
    script(["pipelines/evaluate.py", "--data", str(data), "--checkpoint", str(output / "final"),
            "--split", "test", "--json", str(test)])
    groups = json.loads(script(["benchmarks/within_group.py", "--data", str(data),
                                "--checkpoint", str(output / "final")]))
    via_index = output / "via_index.json"
    script(["pipelines/embed.py", "--data", str(data), "--checkpoint", str(output / "final"),
            "--db", str(output / "lancedb"), "--table", "test", "--split", "test",
            "--local-max-videos", "1000", "--overwrite"])
    script(["pipelines/evaluate.py", "--data", str(data), "--checkpoint", str(output / "final"),
            "--split", "test", "--via-index", "--db", str(output / "lancedb"), "--table", "test",
            "--candidates", str(CANDIDATES), "--json", str(via_index)])
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: (r["val_t2v_R@1"], r["epoch"]))
    row = {"run": name, "seed": seed, "best_epoch": best["epoch"],
           "train_minutes": round(sum(r["train_s"] + r["val_s"] for r in rows) / 60, 1),
           "test": json.loads(test.read_text()), "within_group": groups,
           "via_index": json.loads(via_index.read_text()),
           "final_loss": rows[-1]["loss"]}
    result_file.write_text(json.dumps(row))
    return row


def figure(row: dict, path: tuple[str, ...]) -> float:
    for key in path:
        row = row[key]
    return row


def summary(name: str, rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every column."""
    out = {"run": name, "seeds": [r["seed"] for r in rows]}
    for title, path in COLUMNS.items():
        values = [figure(r, path) for r in rows]
        out[title] = (statistics.mean(values),
                      statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def markdown(summaries: list[dict]) -> str:
    lines = ["| run | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 1) + "|"]
    for s in summaries:
        cells = [f"{s[t][0]:.1f} ± {s[t][1]:.1f}" for t in COLUMNS]
        lines.append(f"| `{s['run']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="data and checkpoints go here")
    parser.add_argument("--tier", default="easy", choices=TIERS,
                        help="the synthetic tier (pipelines/sources/synthetic.py)")
    parser.add_argument("--backbone", default="vtr-128-p8",
                        help="backbone of every run (a run's own flags may change it)")
    parser.add_argument("--train-groups", type=int, default=134,
                        help="synthetic training groups of 3 clips (val and test: 33 each)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of every run")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--train-flags", default="",
                        help="more train.py flags for every run, e.g. '--hard-negatives 5'")
    parser.add_argument("--cpus", type=float, default=2,
                        help="CPUs for training, split between --parallel runs")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at a time")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                        help="comma-separated runs, each a model and its changes from the "
                        "defaults: -PART / +PART (" + ", ".join(PARTS + EXTRA_PARTS) + ") or "
                        f"{', '.join(FLAG_SETS)}; e.g. 'lfemi +shift -temporal'")
    args = parser.parse_args()
    names = [" ".join(name.split()) for name in args.runs.split(",")]
    for name in names:
        try:
            run_flags(name)
        except ValueError as error:
            parser.error(str(error))
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare(workdir, args.train_groups, args.tier)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(name, seed) for name in names for seed in seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(
            lambda job: run_seed(*job, data, workdir, args, args.cpus / args.parallel), jobs))
    summaries = [summary(name, [r for r in results if r["run"] == name]) for name in names]
    print(json.dumps({"settings": vars(args), "runs": results, "summary": summaries}, indent=2))
    print(markdown(summaries))


if __name__ == "__main__":
    main()
