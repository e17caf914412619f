"""The detection page ``<out>/<video>.html`` of ``pivad detect --html``, built from the JSON detect writes.

Its data is the ``<video>.json`` payload (:func:`pivad.detect.report.summary`) plus the snippet times,
the page's video (:mod:`pivad.report.media`) and, for π-VAD, the late PI's per-modality activation
curves (:mod:`pivad.report.activations`). One timeline point per snippet, at the snippet's first frame.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pivad.report.page import write_page
from pivad.video.decode import SNIPPET

SCRIPTS = ("detect.js",)


def facts(payload: dict[str, Any]) -> list[list[str]]:
    """The "video facts" rows: fps, frames, snippets, size, model, threshold and where it came from."""
    v, m, f = payload["video"], payload.get("model") or {}, payload.get("features") or {}
    model = m.get("kind") or "?"
    where = m.get("checkpoint") or m.get("onnx") or ""
    trained = ", ".join(f"{k} {m[k]}" for k in ("phase", "step") if m.get(k) is not None)
    rows = [
        ["file", v["path"]],
        ["fps", f"{v['fps']:.3f}"],
        ["frames", f"{v['n_frames']} decoded" + (f" (header: {v['n_frames_header']})"
                                                 if v.get("n_frames_header") not in (None, v["n_frames"]) else "")],
        ["snippets", f"{v['n_snippets']} × {SNIPPET} frames"],
        ["duration", f"{v['duration_s']:.2f} s"],
        ["size", f"{v['width']}×{v['height']}"],
        ["model", f"{model} ({m.get('backend', 'torch')}){': ' + where if where else ''}"
                  + (f", {trained}" if trained else "")],
        ["threshold", f"{payload['threshold']:g} ({payload['threshold_source']})"],
        ["interval rule", "score ≥ threshold, min {min_frames} frames, merge gap {merge_gap}".format(
            **payload["interval_rule"])],
        ["features", f"{f.get('crops', '?')} crop(s), I3D {f.get('i3d', '?')}, {f.get('resize', '?')} "
                     f"{f.get('interp', '')}".rstrip()],
        ["intervals", str(len(payload["intervals"]))],
    ]
    return rows


def page_data(payload: dict[str, Any], video_src: str | None, video_how: str = "",
              activations: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """What ``detect.js`` reads (``#pivad-data``)."""
    v = payload["video"]
    fps = v["fps"] if v["fps"] and v["fps"] > 0 else 30.0
    scores = payload["snippet_scores"]
    rows = facts(payload)
    if video_src:
        rows.append(["page video", f"{video_src} ({video_how})"])
    return {
        "name": Path(v["path"]).name,
        "live": False,
        "fps": fps,
        "snippet": SNIPPET,
        "n_snippets": len(scores),
        "times": [round(s * SNIPPET / fps, 6) for s in range(len(scores))],
        "scores": scores,
        "threshold": payload["threshold"],
        "threshold_source": payload["threshold_source"],
        "intervals": payload["intervals"],
        "duration": v["duration_s"],
        "facts": rows,
        "activations": activations or {},
        "video": {"src": video_src, "how": video_how} if video_src else None,
    }


def body(title: str, subtitle: str, video_src: str | None, live: bool = False) -> str:
    """The page's markup; every dynamic part is filled by ``detect.js`` from the data. ``video_src``: the
    video's path relative to the page (POSIX), URL-encoded here (a ``%``, ``#``, ``?`` or space in a file
    name would otherwise end or change the URL)."""
    if video_src:
        url = quote(video_src, safe="/")  # ':' too: 'a:b.mp4' would read as a URL scheme
        player = (f'<section class="player"><video id="video" controls muted preload="auto" '
                  f'src="{html.escape(url, quote=True)}"></video></section>')
        keys = ('<p class="hint">click the timeline to seek · <kbd>space</kbd> play/pause · <kbd>←</kbd>/<kbd>→</kbd> '
                'one snippet · <kbd>n</kbd>/<kbd>p</kbd> next/previous interval · click a legend entry to '
                'show or hide a line</p>')
    else:
        player, keys = "", '<p class="hint">click a legend entry to show or hide a line</p>'
    status = '<span id="live-status" class="live-status running">live</span>' if live else ""
    return f"""<header><h1>{html.escape(title)} {status}</h1><p>{html.escape(subtitle)}</p></header>
<main>
{player}
<section><h2>Anomaly score per snippet</h2><div id="timeline" class="plot"></div>{keys}</section>
<div class="cols">
<section><h2>Detected intervals</h2>
<table id="intervals" class="data"><thead><tr><th>#</th><th>start</th><th>end</th><th>peak</th></tr></thead>
<tbody></tbody></table><p id="no-intervals" class="note">no snippet reaches the threshold</p></section>
<section><h2>Video</h2><table id="facts" class="data facts"></table></section>
</div>
</main>"""


def write_detection_html(out_dir: str | Path, stem: str, payload: dict[str, Any], video: str | Path,
                         activations: dict[str, list[float]] | None = None) -> dict[str, Path]:
    """Write ``<out>/<stem>.html`` (and ``<stem>.browser.mp4`` when the source needs re-encoding)."""
    from pivad.report.media import page_video

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    shown, how = page_video(video, out_dir, stem, payload["video"]["fps"])
    if how != "source":
        paths["browser_video"] = shown
    src = Path(os.path.relpath(Path(shown).resolve(), out_dir.resolve())).as_posix()
    data = page_data(payload, src, how, activations)
    paths["html"] = write_page(out_dir / f"{stem}.html", f"{data['name']} · pivad detect",
                               body(data["name"], "pivad detect: anomaly score over the video", src), data, SCRIPTS)
    return paths


def detection_html_for(out_dir: str | Path, video: str | Path, det: Any, payload: dict[str, Any],
                       scorer: Any) -> dict[str, Path]:
    """``pivad detect --html``: the page of one detection, with activation curves for π-VAD checkpoints."""
    from pivad.report.activations import modality_activations

    model = payload.get("model") or {}
    acts = {}
    if model.get("backend") == "torch" and model.get("kind") == "pivad":
        acts = modality_activations(scorer.source, det.features)
    return write_detection_html(out_dir, Path(video).stem, payload, video, acts)
