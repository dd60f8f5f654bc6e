"""Local paths and ``s3://`` URIs behind one interface (fsspec; s3fs for S3).

S3 settings come from the usual AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL`` for MinIO and the like), so Ray workers that inherit the
driver's environment reach the same storage.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import tempfile
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


def object_store_options(uri: str) -> dict[str, str]:
    """S3 options for libraries with their own (Rust ``object_store``) S3 client, delta-rs
    and Lance: the endpoint (MinIO, moto) and region from the AWS environment that s3fs
    reads, spelled out, and plain HTTP allowed for an ``http://`` endpoint."""
    if not uri.startswith("s3://"):
        return {}
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["aws_region"] = region
    return options


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

    def matches(self, other: Fingerprint | None) -> bool:
        """Same file content, as far as metadata tells: size plus ETag where both have one
        (S3: a listing and a HEAD give the same ETag but differently rounded times),
        else size plus mtime."""
        if other is None or self.size_bytes != other.size_bytes:
            return False
        if self.etag and other.etag:
            return self.etag == other.etag
        return self.mtime == other.mtime


UNREADABLE = Fingerprint(-1, None, None)  # the metadata call failed; the file may be there


def fingerprint_of(info: dict) -> Fingerprint:
    """The fingerprint in one fsspec ``info`` record (local or S3; ``find(detail=True)``
    gives the same records, so a listing fingerprints a whole folder in its own calls)."""
    mtime = info.get("mtime")
    if mtime is None and info.get("LastModified") is not None:
        mtime = info["LastModified"].timestamp()
    etag = info.get("ETag")
    return Fingerprint(
        size_bytes=int(info.get("size") or 0),
        mtime=float(mtime) if mtime is not None else None,
        etag=etag.strip('"') if etag else None,
    )


def fingerprint(fs: fsspec.AbstractFileSystem, path: str) -> Fingerprint:
    """Size, modification time and ETag (S3) of one object, from a metadata call only."""
    return fingerprint_of(fs.info(path))


def fingerprints(uris: list[str], threads: int = 16) -> dict[str, Fingerprint | None]:
    """The fingerprint of each uri: None where there is no such file, :data:`UNREADABLE`
    where its metadata could not be read (a refresh must not take that for a deletion).

    Metadata calls in a thread pool, since on S3 each is a round trip.
    """

    def one(uri: str) -> Fingerprint | None:
        try:
            fs, path = filesystem(uri)
            info = fs.info(path)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - throttled, no access: not known to be gone
            return UNREADABLE
        return fingerprint_of(info) if info.get("type") == "file" else None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return dict(zip(uris, pool.map(one, uris), strict=True))


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


def list_videos(root: str) -> list[tuple[str, str, Fingerprint]]:
    """``(video_id, uri, fingerprint)`` for every video file under a local folder or S3 prefix.

    The id is the path relative to ``root`` without its extension, so it is
    stable across runs; two files that would share an id (``a.mp4`` and
    ``a.mkv``) are refused here, before any work.
    """
    fs, base = filesystem(root)
    if not fs.isdir(base):
        raise FileNotFoundError(f"--videos {root}: not a folder or prefix")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found: dict[str, tuple[str, Fingerprint]] = {}
    for path, info in sorted(fs.find(base, detail=True).items()):
        if not path.lower().endswith(VIDEO_EXTENSIONS):
            continue
        rel = path[len(base.rstrip("/")) :].lstrip("/")
        uri = path if protocol == "file" else f"{protocol}://{path}"
        video_id = os.path.splitext(rel)[0]
        if video_id in found:
            raise ValueError(
                f"--videos {root}: {found[video_id][0]} and {uri} would both be video "
                f"{video_id!r}; rename or remove one of them")
        found[video_id] = (uri, fingerprint_of(info))
    return [(video_id, uri, fp) for video_id, (uri, fp) in found.items()]
