"""Search results as cards in a notebook: each video's thumbnail at its best moment, its
id, score and moment, as the search page shows them.

    from pipelines.serving.cards import ResultCards
    ResultCards(search.search("a dog catches a frisbee"), search)   # last line of a cell

Thumbnails are the ingest's stored frames (``VideoSearch.media``), inlined as data
URIs so that the notebook keeps them when saved. Every id is escaped: a video id is
data, never markup.
"""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pipelines.index.search import VideoSearch

STYLE = ("display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px;"
         "font-family:system-ui,sans-serif;font-size:13px")
CARD_STYLE = "border:1px solid #ddd;border-radius:8px;overflow:hidden;background:#fff"


def clock(seconds: float) -> str:
    """``seconds`` as m:ss (h:mm:ss from an hour), as the page writes a moment."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ResultCards:
    """The cards of ``results`` (a ``VideoSearch.search``, ``similar`` or
    ``search_image`` table) of ``search``; Jupyter shows them through ``_repr_html_``."""

    def __init__(self, results: pd.DataFrame, search: VideoSearch) -> None:
        self.results = results
        self.search = search

    def card(self, result: dict) -> str:
        middle = (result["start_s"] + result["end_s"]) / 2
        jpeg = base64.b64encode(self.search.media.frame(result["video_id"], middle))
        video_id = html.escape(str(result["video_id"]))
        return (f'<div style="{CARD_STYLE}">'
                f'<img src="data:image/jpeg;base64,{jpeg.decode()}" alt="{video_id}" '
                'style="width:100%;aspect-ratio:16/9;object-fit:cover;display:block">'
                f'<div style="padding:6px 8px"><b>#{int(result["rank"])} {video_id}</b><br>'
                f'{clock(result["start_s"])}–{clock(result["end_s"])} · '
                f'score {result["score"]:.3f}</div></div>')

    def _repr_html_(self) -> str:
        cards = "".join(self.card(r) for r in self.results.to_dict(orient="records"))
        return f'<div style="{STYLE}">{cards}</div>'
