"""The ``vtr`` command: one subcommand per job, each taking exactly that job's flags.

    vtr ingest --manifest manifest.csv --data ingest_out/
    vtr train --data ingest_out/ --checkpoint ckpt/
    vtr query --db lancedb/ --checkpoint ckpt/final --text "a dog catches a frisbee"
    vtr serve db=lancedb/ checkpoint=ckpt/final

``vtr JOB ...`` runs the same ``main`` as ``python pipelines/JOB.py ...`` (which,
like ``ray job submit -- python pipelines/JOB.py ...``, keeps working): a job's
module is imported only when it is asked for, so ``vtr --help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module whose ``main(argv)`` runs it, one line for ``vtr --help``)
JOBS: dict[str, tuple[str, str]] = {
    "ingest": ("pipelines.ingest", "decode videos to frames and caption keywords (Delta Lake)"),
    "train": ("pipelines.train", "train a model on an ingest output (Ray Train)"),
    "evaluate": ("pipelines.evaluate", "retrieval metrics of a model on a split"),
    "embed": ("pipelines.embed", "write a model's vectors and rerank features to LanceDB"),
    "query": ("pipelines.query", "search a LanceDB table with a text"),
    "refresh": ("pipelines.refresh", "bring an ingest output and its table up to date"),
    "serve": ("pipelines.serve", "search over HTTP on Ray Serve (serve run pipelines.serve:app)"),
    "demo": ("pipelines.demo", "the end-to-end demo on bundled and generated videos"),
    "synthetic": ("pipelines.sources.synthetic", "generate the order-only synthetic benchmark"),
}
#: the Serve application ``vtr serve`` starts
SERVE_APP = "pipelines.serve:app"


def usage() -> str:
    """``vtr --help``: the subcommands and what each does."""
    width = max(map(len, JOBS))
    lines = [f"  {name.ljust(width)}  {line}" for name, (_, line) in JOBS.items()]
    return ("usage: vtr JOB [flags]    (vtr JOB --help lists a job's flags)\n\n"
            "Natural-language search over video archives.\n\njobs:\n" + "\n".join(lines))


def serve_help() -> str:
    """``vtr serve --help``: how the command maps onto ``serve run`` and every argument."""
    from pipelines.serve import SearchArgs

    lines = []
    for name, info in SearchArgs.model_fields.items():
        need = "required" if info.is_required() else f"default: {info.default}"
        lines.append(f"  {name}=...  {info.description or ''} ({need})")
    return ("usage: vtr serve [serve run options] (key=value ... | CONFIG.yaml)\n\n"
            f"Runs `serve run {SERVE_APP} key=value ...`, or `serve run CONFIG.yaml` for a\n"
            "Serve config such as cluster/serve-search.yaml. Options before the arguments\n"
            "(--address, --non-blocking, ...) go to `serve run` (serve run --help).\n\n"
            "arguments:\n" + "\n".join(lines))


def serve_main(argv: list[str]) -> int:
    """``vtr serve``: ``serve run`` of the search application, or of a config file.

    The application's arguments are the trailing ``key=value`` words whose key is a
    ``SearchArgs`` field; everything before them goes to ``serve run`` as written."""
    if not argv or argv[0] in ("-h", "--help"):
        print(serve_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from ray.serve.scripts import cli

    from pipelines.serve import SearchArgs

    start = len(argv)
    while start and argv[start - 1].split("=", 1)[0] in SearchArgs.model_fields \
            and "=" in argv[start - 1]:
        start -= 1
    if argv[-1].endswith((".yaml", ".yml")):
        run_args = argv
    else:
        run_args = [*argv[:start], SERVE_APP, *argv[start:]]
    cli.main(args=["run", *run_args], prog_name="vtr serve")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"vtr: error: unknown job {name!r}; choose from {', '.join(JOBS)}",
              file=sys.stderr)
        return 2
    if name == "serve":
        return serve_main(rest)
    program = sys.argv[0]
    sys.argv[0] = f"vtr {name}"  # argparse's prog, in usage lines and errors
    try:
        return importlib.import_module(JOBS[name][0]).main(rest)
    finally:
        sys.argv[0] = program


if __name__ == "__main__":
    sys.exit(main())
