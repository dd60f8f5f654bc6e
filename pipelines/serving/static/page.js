// The search page: asks the app's API, shows the results as cards, plays a moment.
// Every text from the table (ids, captions, keywords) goes in with textContent, never
// as HTML; the page's Content-Security-Policy runs no script but this file.
"use strict";

// the app's root, whatever prefix a proxy or Serve route puts it under
const base = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const TOKEN_KEY = "vtr_token";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let lastSearch = null;  // to search again once a token is given

function keepToken(value) {
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  // for the <img> and <video> requests, which cannot send a header: this app's paths
  // only, never sent by another site's page
  document.cookie = `${TOKEN_KEY}=${encodeURIComponent(value)}; path=${base}; SameSite=Strict`;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function detailOf(body, response) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return detail ? String(detail) : `${response.status} ${response.statusText}`;
}

class NeedsToken extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(base + path, Object.assign({}, options, {headers}));
  const body = await response.json().catch(() => null);
  if (response.status === 401) {
    $("token-form").hidden = false;
    $("token").focus();
    throw new NeedsToken(detailOf(body, response));
  }
  if (!response.ok) throw new Error(detailOf(body, response));
  return body;
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(r).padStart(2, "0")}`;
}

function mediaUrl(kind, videoId) {
  return `${base}${kind}/${encodeURIComponent(videoId)}`;
}

function filters() {
  const split = $("split").value;
  const where = $("where").value.trim();
  return {filter: split ? {split} : {}, ...(where ? {where} : {})};
}

function k() {
  return Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12));
}

function showResults(results, label) {
  const grid = $("results");
  grid.replaceChildren();
  for (const result of results) {
    const card = $("card").content.firstElementChild.cloneNode(true);
    card.dataset.videoId = result.video_id;
    card.dataset.start = result.start_s;
    const middle = (result.start_s + result.end_s) / 2;
    // the answer's own JPEG (asked for inline: one request a search)
    card.querySelector(".thumb").src = result.thumbnail.startsWith("data:image/jpeg;base64,")
      ? result.thumbnail : `${mediaUrl("thumbnails", result.video_id)}?t=${middle.toFixed(1)}`;
    card.querySelector(".thumb").alt = `frame of ${result.video_id} at ${clock(middle)}`;
    card.querySelector(".moment").textContent = `${clock(result.start_s)}–${clock(result.end_s)}`;
    card.querySelector(".video-id").textContent = result.video_id;
    card.querySelector(".score").textContent = result.score.toFixed(3);
    card.querySelector(".play").addEventListener("click", () => play(result));
    card.querySelector(".similar").addEventListener("click", () => similar(result));
    grid.append(card);
  }
  say(results.length ? `${results.length} videos ${label}` : `no videos ${label}`);
}

async function run(search) {
  lastSearch = search;
  say("searching…");
  try {
    const [body, label] = await search();
    showResults(body.results, label);
    lastSearch = null;
  } catch (error) {
    say(error.message, true);
  }
}

// a JSON search with the form's k and filters, thumbnails inline (one request a search)
function postSearch(path, body) {
  return api(path, {
    method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({...body, k: k(), thumbnails: "inline", ...filters()}),
  });
}

function searchText() {
  const text = $("query").value.trim();
  if (!text) return;
  run(async () => [await postSearch("search", {text}), `for “${text}”`]);
}

function similar(result) {
  run(async () => [await postSearch("search/similar",
                                    {video_id: result.video_id, at_s: result.start_s}),
                   `like ${result.video_id}`]);
}

function searchImage() {
  const file = $("image").files[0];
  if (!file) { say("choose an image first", true); return; }
  const {filter, where} = filters();
  const form = new FormData();
  form.append("image", file);
  form.append("k", String(k()));
  form.append("thumbnails", "inline");
  form.append("filter", JSON.stringify(filter));
  if (where) form.append("where", where);
  run(async () => [await api("search/image", {method: "POST", body: form}),
                   `like the image ${file.name}`]);
}

async function play(result) {
  const video = $("player-video");
  $("player-title").textContent = result.video_id;
  $("player-moment").textContent =
    `best moment ${clock(result.start_s)}–${clock(result.end_s)} (score ${result.score.toFixed(3)})`;
  $("player").hidden = false;
  video.addEventListener("loadedmetadata", () => {
    video.currentTime = result.start_s;
    video.play().catch(() => {});
  }, {once: true});
  // the media fragment starts it at the moment too where seeking waits for data
  video.src = `${mediaUrl("videos", result.video_id)}#t=${result.start_s.toFixed(2)}`;
  const list = $("player-captions");
  list.replaceChildren();
  try {
    const body = await api(`captions/${encodeURIComponent(result.video_id)}`);
    for (const caption of body.captions) {
      const item = document.createElement("li");
      const span = caption.start_s == null ? "" : ` (${clock(caption.start_s)}–${clock(caption.end_s)})`;
      item.textContent = caption.caption + span;
      if (caption.keywords && caption.keywords.length) {
        const words = document.createElement("small");
        words.textContent = ` — ${caption.keywords.join(", ")}`;
        item.append(words);
      }
      list.append(item);
    }
  } catch (error) {
    if (!(error instanceof NeedsToken)) say(error.message, true);
  }
}

async function describe() {
  try {
    const info = await api("info");
    $("about").textContent = `table ${info.table}: ${info.rows} rows, model ${info.model_id}`;
    const select = $("split");
    select.replaceChildren(new Option("all", ""));
    for (const split of info.splits) select.append(new Option(split, split));
    $("token-form").hidden = true;
    return true;
  } catch (error) {
    $("about").textContent = "";
    say(error.message, true);
    return false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (token) keepToken(token);  // the cookie again, for a page opened in a new tab
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); searchText(); });
  $("image-search").addEventListener("click", searchImage);
  $("player-close").addEventListener("click", () => {
    $("player-video").pause();
    $("player").hidden = true;
  });
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    keepToken($("token").value);
    $("token").value = "";
    if (await describe() && lastSearch) run(lastSearch);
  });
  describe();
});
