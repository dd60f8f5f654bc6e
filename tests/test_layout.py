"""The code's layout rules, read from the source with ``ast``.

- ``vtr_models`` never imports ``pipelines`` or Ray (a plain PyTorch library);
- ``pipelines`` uses ``vtr_models`` through its package root only (the front door);
- the stage packages (``pipelines/core``, ``ingestion``, ...) never import a job script
  (``pipelines/*.py``): job scripts wire stages, not the other way round;
- imports between the stage packages run one way, with no cycles;
- no package or module of ``pipelines/`` is named like a package that installed
  libraries import or probe for: ``python pipelines/job.py`` puts ``pipelines/`` first
  on ``sys.path``, where a ``pipelines/datasets/`` once made transformers find "datasets"
  and fail importing it;
- ingest decoder processes stay free of torch.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB_SCRIPTS = {p.stem for p in (ROOT / "pipelines").glob("*.py")} - {"__init__"}
STAGES = sorted(p.name for p in (ROOT / "pipelines").iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as dotted names (``from a import b`` gives ``a.b``
    when ``a.b`` is a module of this repository, else ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    ROOT / sub.replace(".", "/") / "__init__.py").is_file()
                found.add(sub if is_module else node.module)
    return found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_vtr_models_imports_neither_pipelines_nor_ray():
    for path in python_files("vtr_models"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in {"pipelines", "ray"}}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_pipelines_use_vtr_models_through_its_root():
    for path in python_files("pipelines"):
        deep = {m for m in imported_modules(path) if m.startswith("vtr_models.")}
        assert not deep, f"{path.relative_to(ROOT)} reaches into {sorted(deep)}"


def test_stage_packages_never_import_job_scripts():
    assert {"core", "ingestion", "training", "index", "sources"} <= set(STAGES)
    jobs = {f"pipelines.{name}" for name in JOB_SCRIPTS}
    for stage in STAGES:
        for path in python_files(f"pipelines/{stage}"):
            bad = imported_modules(path) & jobs
            assert not bad, f"{path.relative_to(ROOT)} imports job script(s) {sorted(bad)}"


def test_stage_packages_import_each_other_without_cycles():
    graph: dict[str, set[str]] = {}
    for stage in STAGES:
        graph[stage] = {m.split(".")[1] for path in python_files(f"pipelines/{stage}")
                        for m in imported_modules(path)
                        if m.startswith("pipelines.") and m.split(".")[1] in STAGES} - {stage}
    assert graph["core"] == set(), graph  # everything may use core; core uses no stage
    visiting, done = set(), set()

    def visit(stage: str, path: list[str]) -> None:
        assert stage not in visiting, f"import cycle: {' -> '.join([*path, stage])}"
        if stage in done:
            return
        visiting.add(stage)
        for other in sorted(graph[stage]):
            visit(other, [*path, stage])
        visiting.discard(stage)
        done.add(stage)

    for stage in STAGES:
        visit(stage, [])


def test_ingest_decoder_processes_stay_free_of_torch():
    code = ("import sys, pipelines.ingestion.video_decode; "
            "sys.exit('torch' in sys.modules or 'open_clip' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_pipelines_names_shadow_no_library_package():
    ours = JOB_SCRIPTS | set(STAGES)
    known = set(importlib.metadata.packages_distributions())  # installed top-level names
    probes = importlib.util.find_spec("transformers.utils.import_utils")
    assert probes is not None and probes.origin
    # the optional packages transformers (under sentence-transformers and KeyBERT) looks for
    probed = set(re.findall(r'_is_package_available\(\s*"([A-Za-z0-9_]+)"',
                            Path(probes.origin).read_text()))
    assert "datasets" in probed  # the reading works: the name that once clashed is found
    assert not ours & (known | probed), sorted(ours & (known | probed))
