"""Local paths and ``s3://`` URIs behind one interface (fsspec; s3fs for S3).

S3 settings come from the usual AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL`` for MinIO and the like), so Ray workers that inherit the
driver's environment reach the same storage.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path inside it."""
    return url_to_fs(uri)


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem (for Ray Data writers) backed by the same fsspec filesystem."""
    fs, path = filesystem(uri)
    if fs.protocol == "file" or "file" in fs.protocol:
        return pafs.LocalFileSystem(), path
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def absolute(uri: str) -> str:
    """A URI unchanged, a local path made absolute against this process's directory.

    Ray workers run in other directories, so every local path a job hands to
    them must be absolute.
    """
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI without touching ``://``."""
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])


@dataclass(frozen=True)
class Fingerprint:
    """What change detection compares between runs: size plus mtime or ETag."""

    size_bytes: int
    mtime: float | None
    etag: str | None


def fingerprint(fs: fsspec.AbstractFileSystem, path: str) -> Fingerprint:
    """Size, modification time and ETag (S3) of one object, from a metadata call only."""
    info = fs.info(path)
    mtime = info.get("mtime")
    if mtime is None and info.get("LastModified") is not None:
        mtime = info["LastModified"].timestamp()
    etag = info.get("ETag")
    return Fingerprint(
        size_bytes=int(info.get("size") or 0),
        mtime=float(mtime) if mtime is not None else None,
        etag=etag.strip('"') if etag else None,
    )


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path holding ``uri``'s bytes: the path itself when local, else a temp download.

    Decoders want a seekable local file; downloading to disk (not memory) keeps
    long remote videos out of RAM.
    """
    fs, path = filesystem(uri)
    if "file" in fs.protocol:
        yield path
        return
    suffix = os.path.splitext(path)[1]
    with tempfile.TemporaryDirectory(prefix="vtr-") as tmp:
        local = os.path.join(tmp, "video" + suffix)
        fs.get_file(path, local)
        yield local


def list_videos(root: str) -> list[tuple[str, str]]:
    """``(video_id, uri)`` for every video file under a local folder or S3 prefix.

    The id is the path relative to ``root`` without its extension, so it is
    stable across runs and unique within the archive.
    """
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise FileNotFoundError(f"--videos {root}: not a folder or prefix")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = []
    for path in sorted(fs.find(base)):
        if not path.lower().endswith(VIDEO_EXTENSIONS):
            continue
        rel = path[len(base.rstrip("/")) :].lstrip("/")
        uri = path if protocol == "file" else f"{protocol}://{path}"
        found.append((os.path.splitext(rel)[0], uri))
    return found


class StagedOutput:
    """Write a job's outputs under a hidden staging folder, then publish them at once.

    A crashed run leaves only ``.staging-*`` behind, never a ``videos/`` that
    looks complete; ``_SUCCESS`` is written last, after every part is in place.
    """

    def __init__(self, output: str, parts: tuple[str, ...], overwrite: bool) -> None:
        self.output = output.rstrip("/")
        self.parts = parts
        self.fs, self.path = filesystem(self.output)
        existing = [p for p in (*parts, "_SUCCESS") if self.fs.exists(join(self.path, p))]
        if existing and not overwrite:
            raise FileExistsError(
                f"output {output} already holds {', '.join(existing)}; "
                "pass --overwrite to replace it, or choose another --output"
            )
        staging_name = f".staging-{uuid.uuid4().hex[:12]}"
        self.staging = join(self.output, staging_name)
        self.staging_path = join(self.path, staging_name)
        self.fs.makedirs(self.staging_path, exist_ok=True)

    def part(self, name: str) -> str:
        """The staging URI to write part ``name`` to."""
        return join(self.staging, name)

    def publish(self, success: bytes = b"") -> None:
        """Replace the published parts with the staged ones, then mark success.

        ``success`` becomes the content of ``_SUCCESS`` (e.g. JSON settings that
        later jobs need, as Hadoop's S3A committers do).
        """
        marker = join(self.path, "_SUCCESS")
        if self.fs.exists(marker):
            self.fs.rm(marker)
        for name in self.parts:
            target = join(self.path, name)
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            self._move_tree(join(self.staging_path, name), target)
        self.discard_staging()
        self.fs.pipe_file(marker, success)

    def _move_tree(self, source: str, target: str) -> None:
        """Move a folder: one rename locally; on object stores, copy each object then delete.

        (fsspec's recursive ``mv`` on S3 also tries to copy the prefix itself, which fails.)
        """
        if "file" in self.fs.protocol:
            self.fs.mv(source, target, recursive=True)
            return
        files = self.fs.find(source)
        if files:
            self.fs.copy(files, [target + f[len(source) :] for f in files])
            self.fs.rm(files)

    def discard_staging(self) -> None:
        """Remove what is left of the staging folder (all of it after a failed run)."""
        if self.fs.exists(self.staging_path):
            self.fs.rm(self.staging_path, recursive=True)
