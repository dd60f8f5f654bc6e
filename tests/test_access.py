"""The search service's door and its upload check, without Ray: who is let in, and
which images a search by example takes."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipelines.index.media import MAX_IMAGE_PIXELS, checked_image
from pipelines.serving.access import TOKEN_ENV, Door, Refused, bearer, is_loopback


def refusal(door: Door, client: str | None, authorization: str | None = None,
            cookie: str | None = None) -> int | None:
    try:
        door.check(client, authorization, cookie)
    except Refused as refused:
        return refused.status
    return None


def test_with_a_token_every_machine_needs_it():
    door = Door("s3cret")
    for client in ("127.0.0.1", "10.0.0.7", None):
        assert refusal(door, client) == 401
        assert refusal(door, client, "Bearer wrong") == 401
        assert refusal(door, client, "Basic s3cret") == 401  # another scheme
        assert refusal(door, client, "Bearer s3cret") is None
        assert refusal(door, client, "bearer  s3cret ") is None
        assert refusal(door, client, cookie="s3cret") is None  # where a route takes it
        assert refusal(door, client, cookie="nope") == 401


def test_without_a_token_only_loopback_unless_remote_is_allowed():
    door = Door()
    for client in ("127.0.0.1", "127.0.1.1", "::1"):
        assert refusal(door, client) is None
    for client in ("10.0.0.7", "192.168.1.2", "fe80::1", "testclient", None):
        assert refusal(door, client) == 403
    assert refusal(Door(allow_remote=True), "10.0.0.7") is None
    door.check_reach("127.0.0.1")  # the page: this machine may load it
    with pytest.raises(Refused):
        door.check_reach("10.0.0.7")
    Door("s3cret").check_reach("10.0.0.7")  # with a token, anyone may load the page
    assert "answers this machine only" in door.announcement()
    assert "NO TOKEN" in Door(allow_remote=True).announcement()


def test_the_token_comes_from_the_arguments_else_the_environment(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert Door.of(None, False).token == "from-env"
    assert Door.of("given", False).token == "given"
    monkeypatch.setenv(TOKEN_ENV, "")
    assert Door.of(None, False).token is None


def test_bearer_and_loopback_parsing():
    assert bearer("Bearer abc") == "abc" and bearer("Bearer ") is None
    assert bearer(None) is None and bearer("Token abc") is None
    assert is_loopback("127.0.0.1") and not is_loopback("8.8.8.8")
    assert not is_loopback("localhost-ish") and not is_loopback(None)


def encoded(image: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels: what a decompression bomb looks like
    before it is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                               8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_an_upload_must_be_a_modest_jpeg_png_or_webp():
    picture = Image.new("RGB", (32, 24), (200, 40, 40))
    for kind in ("JPEG", "PNG", "WEBP"):
        data = encoded(picture, kind)
        assert checked_image(data) == data
    with pytest.raises(ValueError, match="GIF image"):
        checked_image(encoded(picture, "GIF"))
    with pytest.raises(ValueError, match="not an image"):
        checked_image(b"<svg onload=alert(1)>")
    with pytest.raises(ValueError, match="not an image"):
        checked_image(encoded(picture, "JPEG")[:200])  # cut short
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 10
    with pytest.raises(ValueError, match="pixels"):
        checked_image(png_header_only(side, side))
