"""The cluster manifests work as shipped: the Ray cluster launcher config is valid for the
installed Ray, every Ray pin (launcher, Dockerfile, KubeRay) is the driver's Ray, the image
holds what the jobs run, and the jobs take every flag the manifests pass."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import jsonschema
import ray
import yaml
from conftest import REPO

from pipelines.core.job_config import parse_config
from pipelines.ingest import IngestConfig
from pipelines.refresh import RefreshConfig

CLUSTER = REPO / "cluster"
RAY_VERSION = importlib.metadata.version("ray")  # the driver's Ray
# What `pip install .` needs on a node or in the image.
PROJECT_FILES = ["pyproject.toml", "README.md", "pipelines", "vtr_models"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def project_files() -> list[str]:
    """PROJECT_FILES with the directories expanded to their files (no caches)."""
    out = []
    for name in PROJECT_FILES:
        path = REPO / name
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        out += [f.relative_to(REPO).as_posix() for f in files
                if f.is_file() and "__pycache__" not in f.parts]
    return out


def script_flags(argv: list[str], script: str) -> list[str]:
    start = next(i for i, arg in enumerate(argv) if arg.endswith(f"pipelines/{script}"))
    return argv[start + 1:]


def test_cronjob_and_rayjob_run_refresh_with_valid_flags():
    cron = load(CLUSTER / "refresh-cronjob.yaml")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    rayjob = load(CLUSTER / "refresh-rayjob.yaml")
    assert cron["kind"] == "CronJob" and rayjob["kind"] == "RayJob"
    for argv in (container["command"], shlex.split(rayjob["spec"]["entrypoint"])):
        config = parse_config(RefreshConfig, "refresh", script_flags(argv, "refresh.py"))
        assert config.ingest.update and config.embed.update
        assert config.ingest.videos == "s3://bucket/clips/"
        assert config.ingest.data == "s3://bucket/ingest/"
        assert config.embed.data == "s3://bucket/ingest"  # one spelling in the table state


# -- Ray cluster launcher (AWS) --------------------------------------------------------------

def launcher() -> dict:
    return load(CLUSTER / "ray-cluster.yaml")


def test_launcher_config_is_valid_for_the_installed_ray():
    schema = Path(os.path.dirname(ray.__file__)) / "autoscaler" / "ray-schema.json"
    config = launcher()
    jsonschema.validate(config, json.loads(schema.read_text()))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert config["max_workers"] >= sum(t.get("max_workers", 0) for t in workers)


def test_launcher_node_types_declare_their_resources():
    types = launcher()["available_node_types"]
    assert types["gpu_worker"]["resources"].get("GPU", 0) >= 1  # training, embedding
    assert types["cpu_worker"]["resources"].get("GPU", 0) == 0  # ingest
    # The autoscaler plans with these, before any node exists to detect them on.
    assert all(t["resources"].get("CPU") is not None for t in types.values())


def test_launcher_workers_reach_s3_with_an_instance_profile():
    config = launcher()
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            profile = node_type["node_config"].get("IamInstanceProfile", {})
            assert profile.get("Name") or profile.get("Arn"), name


def rsync_match(pattern: str, path: str, is_dir: bool) -> bool:
    """Whether an rsync exclude pattern matches ``path`` (relative to the transfer root)."""
    if pattern.endswith("/") and not is_dir:
        return False
    pattern = pattern.rstrip("/")
    if pattern.startswith("/"):
        return fnmatch.fnmatchcase(path, pattern[1:])
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, "*/" + pattern)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def rsync_left_behind(path: str) -> bool:
    """Whether ``ray up`` leaves ``path`` of the repository behind: rsync gets
    ``--exclude`` for each rsync_exclude pattern and ``--filter 'dir-merge,- NAME'`` for
    each rsync_filter file, whose lines exclude like .gitignore lines."""
    config = launcher()
    patterns = list(config.get("rsync_exclude") or [])
    for name in config.get("rsync_filter") or []:
        lines = (REPO / name).read_text().splitlines() if (REPO / name).is_file() else []
        patterns += [line.strip() for line in lines
                     if line.strip() and not line.startswith(("#", "!"))]
    parts = path.rstrip("/").split("/")
    prefixes = [("/".join(parts[:i]), i < len(parts) or path.endswith("/"))
                for i in range(1, len(parts) + 1)]
    return any(rsync_match(p, prefix, is_dir) for prefix, is_dir in prefixes for p in patterns)


def test_launcher_file_mounts_leave_venv_outputs_and_git_behind():
    assert "." in launcher()["file_mounts"].values()  # the repository
    for path in (".venv/bin/python", "demo_output/videos/part-0.parquet", ".git/HEAD",
                 "pipelines/__pycache__/ingest.cpython-311.pyc"):
        assert rsync_left_behind(path), path
    for path in project_files():
        assert not rsync_left_behind(path), path


RAY_PIN = re.compile(r"\bray(\[[\w,\s-]*\])?==([\w.+-]+)")
PROJECT_INSTALL = re.compile(r"pip install [^&;|]*\s\.$")  # one command of a shell line
CONSTRAINT = re.compile(r"\s(-c|--constraint)[\s=]")


def test_launcher_pins_the_drivers_ray():
    config = launcher()
    commands = config["setup_commands"]
    pins = [(i, m.group(1) or "", m.group(2))
            for i, cmd in enumerate(commands) for m in RAY_PIN.finditer(cmd)]
    assert pins and {version for _, _, version in pins} == {RAY_VERSION}, pins
    ray_install = next(i for i, extras, _ in pins
                       if {"default", "data", "train"} <= set(re.findall(r"\w+", extras)))
    project, install = next((i, m.group()) for i, cmd in enumerate(commands)
                            if (m := PROJECT_INSTALL.search(cmd)))
    assert ray_install < project
    assert CONSTRAINT.search(install), install  # `pip install .` cannot move Ray
    image = config["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{RAY_VERSION}-"), image


# -- Kubernetes: the image and the KubeRay manifests ------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, as (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines
            if line.strip() and not line.startswith("#")]


def docker_ignored(path: str) -> bool:
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern)
               for pattern in dockerignore() for i in range(1, len(parts) + 1))


def image_files() -> dict[str, Path]:
    """Every file the Dockerfile copies from the repository, by its path in the image."""
    workdir = PurePosixPath("/")
    files: dict[str, Path] = {}
    for word, rest in dockerfile():
        if word == "WORKDIR":
            workdir = workdir / rest
        elif word == "COPY":
            *sources, dest = [arg for arg in shlex.split(rest) if not arg.startswith("--")]
            target = workdir / dest
            for source in sources:
                local = REPO / source
                if local.is_dir():  # its contents go into the target
                    for f in local.rglob("*"):
                        if f.is_file() and not docker_ignored(f.relative_to(REPO).as_posix()):
                            files[str(target / f.relative_to(local).as_posix())] = f
                elif local.is_file():
                    into = dest.endswith("/") or len(sources) > 1
                    files[str(target / local.name if into else target)] = local
    return files


def test_dockerfile_builds_on_the_drivers_ray():
    base = next(rest for word, rest in dockerfile() if word == "FROM").split()[0]
    assert base.startswith(f"rayproject/ray:{RAY_VERSION}-"), base
    assert base == launcher()["docker"]["image"]  # one Ray, Python and CUDA everywhere


def test_dockerfile_installs_the_project():
    steps = dockerfile()
    copies = [i for i, (word, _) in enumerate(steps) if word == "COPY"]
    sources = {arg.rstrip("/") for i in copies for arg in shlex.split(steps[i][1])[:-1]}
    assert {"pipelines", "vtr_models", "pyproject.toml", "README.md"} <= sources
    install, command = next((i, m.group()) for i, (word, rest) in enumerate(steps)
                            if word == "RUN" and (m := PROJECT_INSTALL.search(rest)))
    assert install > max(copies)
    assert CONSTRAINT.search(command), command  # keeps the base's Ray
    files = image_files()
    for path in project_files():
        assert files.get(f"/app/{path}") == REPO / path, path
    for path in (".venv", ".git", "demo_output"):
        assert docker_ignored(path), path


def kubernetes_manifests() -> dict[str, dict]:
    paths = [CLUSTER / "refresh-cronjob.yaml", CLUSTER / "refresh-rayjob.yaml",
             *sorted((CLUSTER / "kuberay").glob("*.yaml"))]
    return {path.relative_to(REPO).as_posix(): load(path) for path in paths}


def ray_cluster_specs() -> dict[str, dict]:
    """The RayCluster specs: the RayCluster's, and each RayJob's own."""
    specs = {}
    for name, doc in kubernetes_manifests().items():
        if doc["kind"] == "RayCluster":
            specs[name] = doc["spec"]
        elif doc["kind"] == "RayJob":
            specs[name] = doc["spec"]["rayClusterSpec"]
    return specs


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [group["template"]["spec"] for group in groups]


def groups(spec: dict) -> dict[str, dict]:
    """Worker groups by name; 'head' for the head group."""
    out = {"head": spec["headGroupSpec"]}
    out.update({g["groupName"]: g for g in spec["workerGroupSpecs"]})
    return out


def test_every_manifest_runs_the_project_image():
    images = {name: {c["image"] for pod in pod_specs(doc) for c in pod["containers"]}
              for name, doc in kubernetes_manifests().items()}
    assert "cluster/kuberay/raycluster.yaml" in images
    assert "cluster/kuberay/ingest-rayjob.yaml" in images
    everywhere = set().union(*images.values())
    assert len(everywhere) == 1, images
    image = everywhere.pop()
    build = f"docker build -t {image} ."
    assert build in (CLUSTER / "README.md").read_text()
    assert build in (REPO / "Dockerfile").read_text()


def test_kuberay_ray_version_is_the_drivers():
    for name, spec in ray_cluster_specs().items():
        assert spec.get("rayVersion") == RAY_VERSION, name


def test_kuberay_groups_get_the_resources_ray_is_told():
    for name, spec in ray_cluster_specs().items():
        by_name = groups(spec)
        assert by_name["head"]["rayStartParams"].get("num-cpus") == "0", name  # drivers only
        for group_name, group in by_name.items():
            pod = group["template"]["spec"]
            for container in pod["containers"]:
                resources = container["resources"]
                # Ray takes CPUs and GPUs from the limits; the scheduler places by requests.
                assert resources["requests"] == resources["limits"], (name, group_name)
                gpus = resources["limits"].get("nvidia.com/gpu", 0)
                if group_name == "gpu":
                    assert gpus >= 1, name
                    assert any(t.get("key") == "nvidia.com/gpu"
                               for t in pod.get("tolerations", [])), name
                else:
                    assert gpus == 0, (name, group_name)
                secrets = [e["secretRef"]["name"] for e in container.get("envFrom", [])]
                assert "video-search-aws" in secrets, (name, group_name)  # S3 credentials
    raycluster = groups(ray_cluster_specs()["cluster/kuberay/raycluster.yaml"])
    assert {"cpu", "gpu"} <= set(raycluster)


def test_ingest_rayjob_runs_ingest_from_the_image_with_valid_flags():
    rayjob = load(CLUSTER / "kuberay" / "ingest-rayjob.yaml")
    assert rayjob["kind"] == "RayJob" and rayjob["spec"]["shutdownAfterJobFinishes"] is True
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    script = next(arg for arg in argv if arg.endswith("pipelines/ingest.py"))
    assert image_files().get(script) == REPO / "pipelines" / "ingest.py"
    config = parse_config(IngestConfig, "ingest", script_flags(argv, "ingest.py"))
    assert config.manifest == "s3://bucket/manifest.parquet"
    assert config.data == "s3://bucket/ingest/"
    assert config.max_error_rate == 0.05
    # The keyword model is in the image's Hugging Face cache, under the name the job uses,
    # and the hub is not asked for it
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"snapshot_download('sentence-transformers/{config.keyword_model}')" in dockerfile
    assert "ENV HF_HUB_OFFLINE=1" in dockerfile


def test_refresh_manifests_run_refresh_from_the_image():
    files = image_files()
    rayjob = load(CLUSTER / "refresh-rayjob.yaml")
    script = next(arg for arg in shlex.split(rayjob["spec"]["entrypoint"])
                  if arg.endswith("pipelines/refresh.py"))
    assert files.get(script) == REPO / "pipelines" / "refresh.py"
    cron = load(CLUSTER / "refresh-cronjob.yaml")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    working_dir = PurePosixPath(container["workingDir"])
    assert command[command.index("--working-dir") + 1] == "."
    assert files.get(str(working_dir / "pipelines" / "refresh.py")) == (
        REPO / "pipelines" / "refresh.py")
    # It submits to the RayCluster of cluster/kuberay/raycluster.yaml.
    head = urlparse(command[command.index("--address") + 1]).hostname
    name = load(CLUSTER / "kuberay" / "raycluster.yaml")["metadata"]["name"]
    assert head == f"{name}-head-svc"


def test_serve_config_is_valid_and_builds_the_search_app():
    from ray.serve.schema import ServeDeploySchema

    from pipelines import serve

    config = ServeDeploySchema.model_validate(load(CLUSTER / "serve-search.yaml"))
    (application,) = config.applications
    module, _, builder = application.import_path.partition(":")
    assert (module, builder) == ("pipelines.serve", "app")
    assert getattr(serve, builder)(application.args) is not None  # the args validate
    # the head exposes the port the proxies listen on
    head = load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]["headGroupSpec"]
    ports = {p["name"]: p["containerPort"]
             for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["serve"] == config.http_options.port
