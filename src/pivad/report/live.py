"""``pivad detect --stream ... --html``: a live page served on 127.0.0.1 while the stream runs.

A :class:`LivePage` holds the scores emitted so far and serves two paths from a background thread:
``/`` (the detection page in live mode, no video) and ``/data.json`` (the page's data now, which the
page polls every second until ``done``). Browsers do not let a page opened from ``file://`` read a
growing file beside it, hence the small server; it binds to 127.0.0.1 only, and answers only requests
addressed to it by name (``Host: 127.0.0.1:PORT`` or ``localhost:PORT``): any other ``Host`` gets 403
and no data, so a page on another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) cannot
read the scores.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from pivad.detect.intervals import find_intervals
from pivad.errors import PivadError
from pivad.report.detection import SCRIPTS, body
from pivad.report.page import json_safe, render_page
from pivad.video.decode import SNIPPET

POLL_MS = 1000


class LivePage:
    """Scores of a running stream, served as a live page at :attr:`url` (``start`` / ``close``)."""

    def __init__(self, name: str, fps: float, threshold: float, threshold_source: str, facts: list[list[str]],
                 min_frames: int = 1, merge_gap: int = 0, port: int = 0):  # fmt: skip
        self.name, self.fps = name, (fps if fps > 0 else 30.0)
        self.threshold, self.threshold_source = float(threshold), threshold_source
        self.facts, self.min_frames, self.merge_gap = facts, min_frames, merge_gap
        self._scores: list[float] = []
        self._done = False
        self.polls = 0  # data.json requests served
        self._lock = threading.Lock()
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        except (OSError, OverflowError) as exc:
            raise PivadError(f"--port {port}: cannot serve the live page on 127.0.0.1 "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="pivad-live", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "LivePage":
        self._thread.start()
        return self

    def add(self, snippet: int, score: float) -> None:
        """Record snippet ``snippet``'s score (streams emit them in order)."""
        with self._lock:
            while len(self._scores) <= snippet:
                self._scores.append(float("nan"))
            self._scores[snippet] = float(score)

    def finish(self) -> None:
        with self._lock:
            self._done = True

    def close(self, grace: float | None = None) -> None:
        """Stop serving; if a page has been polling, first give it ``grace`` s (default 1.5 polls) to
        fetch the final state."""
        import time

        if self.polls:
            time.sleep(1.5 * POLL_MS / 1000 if grace is None else grace)
        self._server.shutdown()
        self._server.server_close()

    def data(self) -> dict[str, Any]:
        """The page's data now: the same keys as a detection page's, with ``live`` and ``done``."""
        with self._lock:
            scores, done = list(self._scores), self._done
        frames = np.repeat(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf), SNIPPET)
        intervals = [iv.to_dict(self.fps) for iv in find_intervals(frames, self.threshold, self.min_frames,
                                                                   self.merge_gap)]  # fmt: skip
        duration = len(scores) * SNIPPET / self.fps
        facts = self.facts + [["snippets so far", str(len(scores))], ["intervals", str(len(intervals))]]
        return json_safe({
            "name": self.name, "live": True, "done": done, "poll_ms": POLL_MS, "fps": self.fps,
            "snippet": SNIPPET, "n_snippets": len(scores),
            "times": [round(s * SNIPPET / self.fps, 6) for s in range(len(scores))], "scores": scores,
            "threshold": self.threshold, "threshold_source": self.threshold_source, "intervals": intervals,
            "duration": round(duration, 6), "facts": facts, "activations": {}, "video": None,
        })

    def page(self) -> str:
        return render_page(f"{self.name} · pivad detect (live)",
                           body(self.name, "pivad detect --stream: anomaly score as the stream runs", None,
                                live=True),
                           self.data(), SCRIPTS)  # fmt: skip

    def allowed_hosts(self) -> frozenset[str]:
        """``Host`` header values this server answers (lower case)."""
        port = self._server.server_address[1]
        return frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    def _handler(self):
        live = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if (self.headers.get("Host") or "").strip().lower() not in live.allowed_hosts():
                    self.send_error(403, "Host not allowed")  # DNS rebinding: another site's name for 127.0.0.1
                    return
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(live.page().encode("utf-8"), "text/html; charset=utf-8")
                elif path == "/data.json":
                    live.polls += 1
                    self._send(json.dumps(live.data(), allow_nan=False).encode("utf-8"), "application/json")
                else:
                    self.send_error(404)

            def _send(self, payload: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet: the stream prints its own lines
                pass

        return Handler


def live_page_for(name: str, fps: float, threshold: float, threshold_source: str, model: dict[str, Any],
                  window: int, lag: int, port: int = 0) -> LivePage:
    """``pivad detect --stream --html``: the page of one stream, started."""
    where = model.get("checkpoint") or model.get("onnx") or ""
    facts = [["source", name], ["fps", f"{fps:.3f}"], ["window", f"{window} snippets, lag {lag}"],
             ["model", f"{model.get('kind') or '?'} ({model.get('backend', 'torch')}){': ' + where if where else ''}"],
             ["threshold", f"{threshold:g} ({threshold_source})"]]
    return LivePage(name, fps, threshold, threshold_source, facts, port=port).start()
