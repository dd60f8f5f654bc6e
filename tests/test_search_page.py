"""The search page on the Serve app, over real HTTP and in a real browser: its door (the
token, this machine only without one), videos and thumbnails served by table id only,
uploads limited, search by example, and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from conftest import REPO, free_port, make_checkpoint, run, serving
from PIL import Image

from pipelines.index.search import VideoSearch
from pipelines.ingestion.output import open_ingest
from pipelines.serving.access import is_loopback
from pipelines.sources import samples

pytestmark = pytest.mark.slow
TOKEN = "page-test-token"
MAX_UPLOAD = 100_000
SCRIPT_CAPTION = "<script>alert(1)</script>"
IMG_CAPTION = '<img src=x onerror="window.__xss = 1">'
CAPTIONS = {"clip0": SCRIPT_CAPTION, "clip1": IMG_CAPTION, "clip2": "a white bar moves right",
            "clip3": "a bar crosses a gradient", "long": "a long video of a sweeping bar"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, keyword_model) -> dict:
    """Four 3-second clips and one of 20 s (three 12 s windows), ingested and embedded;
    two captions are HTML."""
    root = tmp_path_factory.mktemp("page-archive")
    uris = {f"clip{i}": samples.write_clip(root / f"clip{i}.mp4", num_frames=36, seed=i)
            for i in range(4)}
    uris["long"] = samples.write_clip(root / "long.mp4", num_frames=240, seed=9)
    pd.DataFrame([{"video_id": v, "uri": str(uri), "caption": CAPTIONS[v], "split": "test"}
                  for v, uri in uris.items()]).to_csv(root / "manifest.csv", index=False)
    result = run(["pipelines/ingest.py", "--manifest", str(root / "manifest.csv"), "--data",
                  str(root / "ingest"), "--frame-size", "64", "--keyword-model", keyword_model])
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = make_checkpoint(root / "ckpt", 3)
    result = run(["pipelines/embed.py", "--data", str(root / "ingest"), "--checkpoint",
                  str(checkpoint), "--db", str(root / "db"), "--table", "videos"])
    assert result.returncode == 0, result.stderr[-3000:]
    return {"db": str(root / "db"), "data": str(root / "ingest"), "checkpoint": str(checkpoint),
            "uris": {v: str(u) for v, u in uris.items()}, "keyword_model": keyword_model}


@pytest.fixture(scope="module")
def app(archive, tmp_path_factory) -> str:
    """The app with a token at ``/``, and without one at ``/open``, on every interface."""
    config = yaml.safe_load((REPO / "cluster" / "serve-search.yaml").read_text())
    config["http_options"] = {"host": "0.0.0.0", "port": free_port()}
    args = {"db": archive["db"], "checkpoint": archive["checkpoint"], "prewarm": False,
            "keyword_model": archive["keyword_model"], "max_replicas": 1,
            "max_upload_bytes": MAX_UPLOAD}
    secured = config["applications"][0]
    secured["args"].update(args, token=TOKEN)
    config["applications"].append({**secured, "name": "open", "route_prefix": "/open",
                                   "args": {**secured["args"], "token": None}})
    with serving(config, tmp_path_factory.mktemp("page-serve")) as url:
        yield url


@pytest.fixture(scope="module")
def api(archive) -> VideoSearch:
    return VideoSearch(archive["db"], "videos", archive["checkpoint"],
                       keyword_model=archive["keyword_model"])


def call(url: str, body: dict | bytes | None = None, token: str | None = TOKEN,
         headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Status, headers and body of a GET (no body) or POST, with the bearer ``token``."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"content-type": "application/json"} if isinstance(body, dict) else {}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers={**sent, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def multipart(fields: dict[str, str], image: bytes, content_type: str = "image/jpeg"
              ) -> tuple[bytes, dict]:
    """A multipart form body with ``fields`` and the file ``image``, and its header."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                 f'filename="query.jpg"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
                 + image + f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), {"content-type": f"multipart/form-data; boundary={boundary}"}


def jpeg(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def test_the_page_is_served_to_anyone_and_runs_only_its_own_script(app):
    status, headers, body = call(app + "/", token=None)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="page.js"' in body and b"<script>" not in body
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    for asset, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        status, headers, _ = call(f"{app}/{asset}", token=None)
        assert status == 200 and headers["content-type"].startswith(kind)
    assert call(app + "/page.py", token=None)[0] == 404


def test_every_data_route_needs_the_token(app):
    form, form_headers = multipart({"k": "2"}, jpeg(0))
    routes = [("/info", None, {}), ("/search", {"text": "a bar", "k": 2}, {}),
              ("/search/similar", {"video_id": "clip2", "k": 2}, {}),
              ("/search/image", form, form_headers), ("/videos/clip2", None, {}),
              ("/thumbnails/clip2", None, {}), ("/captions/clip2", None, {})]
    for path, body, headers in routes:
        assert call(app + path, body, token=None, headers=headers)[0] == 401, path
        assert call(app + path, body, token="not-the-token", headers=headers)[0] == 401, path
        status, _, answer = call(app + path, body, headers=headers)
        assert status == 200, (path, answer[-300:])
    # the page's cookie opens the media routes, which <img> and <video> load, and no other
    cookie = {"Cookie": f"vtr_token={TOKEN}"}
    for path in ("/videos/clip2", "/thumbnails/clip2", "/captions/clip2"):
        assert call(app + path, token=None, headers=cookie)[0] == 200, path
    assert call(app + "/search", {"text": "a bar", "k": 2}, token=None, headers=cookie)[0] == 401
    assert call(app + "/info", token=None, headers=cookie)[0] == 401


def non_loopback_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not is_loopback(address.address):
                return address.address
    return None


def test_without_a_token_only_this_machine_is_answered(app):
    assert call(app + "/open/info", token=None)[0] == 200  # from 127.0.0.1
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no network address but loopback")
    remote = app.replace("127.0.0.1", address)
    status, _, body = call(remote + "/open/info", token=None)
    assert status == 403 and b"answers only the machine it runs on" in body
    assert call(remote + "/open/", token=None)[0] == 403  # not even the page
    assert call(remote + "/info")[0] == 200  # with a token, any machine that has it


def test_videos_are_served_by_table_id_only_with_range_requests(app, archive):
    whole = Path(archive["uris"]["clip2"]).read_bytes()
    status, headers, body = call(app + "/videos/clip2", headers={"Range": "bytes=100-299"})
    assert status == 206 and body == whole[100:300]
    assert headers["content-range"] == f"bytes 100-299/{len(whole)}"
    assert headers["content-type"] == "video/mp4"
    refused = ["/videos/nothing", "/videos/../../../etc/passwd",
               "/videos/..%2F..%2F..%2Fetc%2Fpasswd", "/videos/%2Fetc%2Fpasswd",
               "/videos/" + quote(archive["uris"]["clip2"], safe=""),  # a path, not an id
               "/thumbnails/..%2F..%2Fetc%2Fpasswd", "/captions/%2Fetc%2Fpasswd"]
    for path in refused:
        status, _, body = call(app + path)
        assert status == 404 and b"root:" not in body, (path, status)


def test_thumbnails_are_the_stored_frames_nearest_the_second_asked(app, archive):
    rows = open_ingest(archive["data"]).dataset("videos").to_table(
        columns=["video_id", "timestamps_s", "frames"]).to_pylist()
    stored = {t: frame for row in rows if row["video_id"] == "long"
              for t, frame in zip(row["timestamps_s"], row["frames"], strict=True)}
    for asked in (0.0, 7.4, 19.2):
        status, headers, body = call(f"{app}/thumbnails/long?t={asked}")
        nearest = min(stored, key=lambda t: abs(t - asked))
        assert status == 200 and headers["content-type"] == "image/jpeg"
        assert body == stored[nearest], asked
    assert stored[0.0] != stored[max(stored)]  # the video moves: the times matter


def test_results_carry_their_moment_thumbnail(app, api):
    status, _, body = call(app + "/search", {"text": "a white bar moves right", "k": 5})
    results = json.loads(body)["results"]
    assert status == 200 and len(results) == 5
    expected = api.search("a white bar moves right", k=5)
    assert [r["video_id"] for r in results] == list(expected["video_id"])
    for result in results:
        assert result["start_s"] < result["end_s"]
        middle = (result["start_s"] + result["end_s"]) / 2
        assert result["thumbnail"] == f"/thumbnails/{quote(result['video_id'], safe='')}" \
                                      f"?t={middle:.1f}"
        status, headers, jpeg = call(app + result["thumbnail"])
        assert status == 200 and headers["content-type"] == "image/jpeg"
        result["jpeg"] = jpeg
    # inline, as the page asks: the same JPEGs in the answer, no request each
    status, _, body = call(app + "/search", {"text": "a white bar moves right", "k": 5,
                                             "thumbnails": "inline"})
    inline = json.loads(body)["results"]
    assert [r["video_id"] for r in inline] == [r["video_id"] for r in results]
    for result, with_image in zip(results, inline, strict=True):
        kind, data = with_image["thumbnail"].split(",")
        assert kind == "data:image/jpeg;base64" and base64.b64decode(data) == result["jpeg"]


def test_more_like_this_answers_what_the_api_answers_without_the_video_itself(app, api):
    status, _, body = call(app + "/search/similar", {"video_id": "clip2", "k": 4})
    results = json.loads(body)["results"]
    expected = api.similar("clip2", k=4)
    assert status == 200 and [r["video_id"] for r in results] == list(expected["video_id"])
    assert "clip2" not in [r["video_id"] for r in results] and len(results) == 4
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert [r["score"] for r in results] == [r["first_stage_score"] for r in results]
    # a window of the long video: its moment's second picks which window is the example
    late = api.similar("long", k=2, at_s=15.0)
    early = api.similar("long", k=2, at_s=1.0)
    assert not np.allclose(late["score"], early["score"])
    status, _, body = call(app + "/search/similar", {"video_id": "no-such-video", "k": 2})
    assert status == 404 and b"no video 'no-such-video' in the table" in body


def test_an_uploaded_image_finds_the_video_it_was_taken_from(app, api, archive):
    """A frame of a video, uploaded, finds that video first: the image tower's vector
    against the first stage, and the moment at the frame's second."""
    rows = open_ingest(archive["data"]).dataset("videos").to_table(
        columns=["video_id", "timestamps_s", "frames"]).to_pylist()
    row = next(r for r in rows if r["video_id"] == "clip1")
    frame = row["frames"][len(row["frames"]) // 2]
    body, headers = multipart({"k": "3", "filter": json.dumps({"split": "test"})}, frame)
    status, _, answer = call(app + "/search/image", body, headers=headers)
    results = json.loads(answer)["results"]
    assert status == 200 and results[0]["video_id"] == "clip1", results
    expected = api.search_image(frame, k=3)
    assert [r["video_id"] for r in results] == list(expected["video_id"])


def test_uploads_are_limited_in_size_and_type(app):
    too_big = jpeg(1, size=600)
    assert len(too_big) > MAX_UPLOAD
    body, headers = multipart({"k": "2"}, too_big)
    status, _, answer = call(app + "/search/image", body, headers=headers)
    assert status == 413 and b"larger than 100,000 bytes" in answer
    body, headers = multipart({"k": "2"}, b"#!/bin/sh\necho not an image\n")
    status, _, answer = call(app + "/search/image", body, headers=headers)
    assert status == 400 and b"not an image" in answer
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    body, headers = multipart({"k": "2"}, gif.getvalue(), "image/gif")
    status, _, answer = call(app + "/search/image", body, headers=headers)
    assert status == 400 and b"GIF" in answer
    status, _, answer = call(app + "/search/image", b"plain bytes",
                             headers={"content-type": "application/octet-stream"})
    assert status == 400


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through its chromedriver (never a downloaded one)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "install Debian's chromium and chromium-driver (.ci/run does)"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.set_script_timeout(60)
    yield chrome
    chrome.quit()


def test_the_page_searches_shows_plays_and_escapes_in_a_real_browser(app, browser,
                                                                      tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(app + "/")
    token = wait.until(lambda b: b.find_element(By.ID, "token") if b.find_element(
        By.ID, "token-form").is_displayed() else None)  # the data routes said 401
    token.send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait.until(lambda b: "table videos: 7 rows" in b.find_element(By.ID, "about").text)
    assert not browser.find_element(By.ID, "token-form").is_displayed()  # asked once

    def cards() -> list:
        return browser.find_elements(By.CSS_SELECTOR, "#results .result")

    def search(text: str, where: str = "") -> None:
        browser.find_element(By.ID, "query").clear()
        browser.find_element(By.ID, "query").send_keys(text)
        browser.execute_script("document.getElementById('where').value = arguments[0];"
                               "document.getElementById('status').textContent = ''", where)
        browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
        wait.until(lambda b: "videos for" in b.find_element(By.ID, "status").text)

    search("a white bar moves right")
    assert len(cards()) == 5
    wait.until(lambda b: b.execute_script(
        "return [...document.querySelectorAll('.thumb')].every("
        "i => i.complete && i.naturalWidth > 0)"))

    # the long video's later windows only: its moment starts well into it
    search("a long video of a sweeping bar", where="window_start_s >= 8")
    (card,) = cards()
    start = float(card.get_attribute("data-start"))
    assert start >= 8
    card.find_element(By.CSS_SELECTOR, ".play").click()
    playing = wait.until(lambda b: b.execute_script(
        "const v = document.getElementById('player-video');"
        "return !v.paused && v.readyState >= 2 && v.currentTime > 0 ? v.currentTime : null"))
    assert start - 0.1 <= playing < start + 5
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#player-captions li")) == 1)
    browser.find_element(By.ID, "player-close").click()

    # captions that are HTML show as text, and none of them ran
    for video_id, caption in (("clip0", SCRIPT_CAPTION), ("clip1", IMG_CAPTION)):
        search(CAPTIONS["clip2"])
        card = next(c for c in cards() if c.get_attribute("data-video-id") == video_id)
        card.find_element(By.CSS_SELECTOR, ".play").click()
        item = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#player-captions li"))
        assert item.text.startswith(caption)
        assert browser.execute_script("return window.__xss") is None
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - an alert would be there to read
        browser.find_element(By.ID, "player-close").click()

    # more like this: other videos, said so
    first = cards()[0].get_attribute("data-video-id")
    cards()[0].find_element(By.CSS_SELECTOR, ".similar").click()
    wait.until(lambda b: f"like {first}" in b.find_element(By.ID, "status").text)
    assert cards() and first not in [c.get_attribute("data-video-id") for c in cards()]

    # an image upload
    image = tmp_path / "query.jpg"
    image.write_bytes(jpeg(2))
    browser.find_element(By.CSS_SELECTOR, "details summary").click()  # where it is kept
    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "image-search").click()
    wait.until(lambda b: "like the image query.jpg" in b.find_element(By.ID, "status").text)
    assert cards()
