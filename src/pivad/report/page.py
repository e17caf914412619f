"""One self-contained HTML page: inline styles, inline scripts (uPlot + pivad's), inline JSON data."""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from pivad.io import atomic_write_text

ASSETS = Path(__file__).resolve().parent / "assets"
LIBRARY_JS = ("uPlot.iife.min.js", "common.js")
LIBRARY_CSS = ("uPlot.min.css", "report.css")


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of a file in ``pivad/report/assets``."""
    return (ASSETS / name).read_text(encoding="utf-8")


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, numpy scalars -> Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def script_json(obj: Any) -> str:
    """JSON that can sit inside ``<script type="application/json">``: every ``<`` (only ever inside a
    string) is written ``\\u003c``, so no data can close or open a tag."""
    text = json.dumps(json_safe(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c")


def render_page(title: str, body: str, data: Any, scripts: Sequence[str]) -> str:
    """The HTML text: ``body`` (trusted markup), ``data`` as ``#pivad-data``, then the named asset scripts."""
    styles = "\n".join(asset(n) for n in LIBRARY_CSS)
    code = "\n".join(f"<script>\n{asset(n)}\n</script>" for n in (*LIBRARY_JS, *scripts))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"icon\" href=\"data:,\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{styles}\n</style>\n</head>\n<body>\n{body}\n"
        f"<script type=\"application/json\" id=\"pivad-data\">{script_json(data)}</script>\n{code}\n"
        "</body>\n</html>\n"
    )


def write_page(path: str | Path, title: str, body: str, data: Any, scripts: Sequence[str]) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    atomic_write_text(path, render_page(title, body, data, scripts))
    return path
