"""The ``pivad study`` page in headless Chromium (the session and helpers of ``test_report_browser``).

A fabricated summary with known intervals (two variants, three data seeds, one Δ whose per-seed interval
runs past the axis, a variant name that is markup), re-rendered by the verb from its rows: the page loads
without console errors and every forest-plot mark sits where its value says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pivad.cli import main
from test_report_browser import browser, screenshot  # noqa: F401 - the module's Chromium session
from test_study import _row

NASTY = '<img src=x onerror="window.pwned=1">'


@pytest.fixture(scope="module")
def study_page(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    rows = []
    for ds in (0, 1, 2):
        for ts in (1, 2):
            t = 60.0 + 5 * ds + ts
            rows.append(_row("better", ds, ts, t, t + 8 + ds + 0.5 * ts))  # every interval above 0
            rows.append(_row(NASTY, ds, ts, t, t - 3 + (7 * ts if ds == 2 else 0)))  # one wide per-seed interval
    stored = {"variants": {"better": "--loss.lambda_distill 0.1", NASTY: ""}, "preset": "demo",
              "config": "configs/demo.yaml", "rows": rows}
    (out / "fab.json").write_text(json.dumps(stored))
    assert main(["study", "--report-only", "--out", str(out), "--name", "fab"]) == 0
    return out / "fab.html"


def _open(driver, page: Path) -> None:
    driver.get_log("browser")
    driver.get(page.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_study_page_loads_cleanly_and_escapes_names(browser, study_page, tmp_path):  # noqa: F811
    _open(browser, study_page)
    assert browser.execute_script("return window.pwned") is None and browser.execute_script(
        "return document.querySelectorAll('img').length") == 0
    cells = browser.execute_script("return Array.from(document.querySelectorAll('#summary tbody tr td:first-child'))"
                                   ".map(td => td.textContent)")
    assert cells == ["better", NASTY]
    assert browser.execute_script("return document.querySelectorAll('section.forest-plot svg').length") == 6
    assert browser.execute_script("return document.querySelectorAll('#runs tbody tr').length") == 12
    assert browser.execute_script("return document.scripts.length") == 1  # only the JSON data block
    screenshot(browser, "study_page.png", tmp_path)


def test_forest_marks_sit_at_their_values(browser, study_page):  # noqa: F811
    """In every plot: 2 variant rows and 3 data-seed rows each; the point at the mean, the interval's ends at
    its bounds (cut at the axis, with an arrowhead, only for a per-seed interval), labels clear of the plot."""
    _open(browser, study_page)
    plots = browser.execute_script("""
      return Array.from(document.querySelectorAll('section.forest-plot svg')).map(svg => {
        const [d0, d1] = svg.dataset.domain.split(' ').map(Number), [r0, r1] = svg.dataset.range.split(' ').map(Number);
        const zero = svg.querySelector('line.zero');
        return {d0, d1, r0, r1, zero: +zero.getAttribute('x1'), rows: Array.from(svg.querySelectorAll('g.forest-row')).map(g => {
          const p = g.querySelector('.point'), ci = g.querySelector('line.ci'), label = g.querySelector('text.label').getBBox(),
                value = g.querySelector('text.value').getBBox(), b = p.getBBox();
          return {kind: g.classList.contains('variant') ? 'variant' : 'seed', variant: g.dataset.variant, seed: g.dataset.seed,
                  mean: +g.dataset.mean, low: g.dataset.low === '' ? null : +g.dataset.low,
                  high: g.dataset.high === '' ? null : +g.dataset.high, px: b.x + b.width / 2,
                  ci: ci ? [+ci.getAttribute('x1'), +ci.getAttribute('x2')] : null, cuts: g.querySelectorAll('path.cut').length,
                  labelRight: label.x + label.width, valueLeft: value.x, fill: p.getAttribute('fill')};
        })};
      });""")
    data = json.loads(browser.execute_script("return document.getElementById('pivad-data').textContent"))
    assert len(plots) == 6
    cut_rows = 0
    for plot in plots:
        def x(v: float) -> float:
            v = min(max(v, plot["d0"]), plot["d1"])
            return plot["r0"] + (v - plot["d0"]) / (plot["d1"] - plot["d0"]) * (plot["r1"] - plot["r0"])

        assert plot["zero"] == pytest.approx(x(0.0), abs=0.01)
        assert [(r["kind"], r["variant"], r["seed"]) for r in plot["rows"]] == [
            (kind, v, seed) for v in ("better", NASTY) for kind, seed in [("variant", "")] + [("seed", s) for s in "012"]]
        for r in plot["rows"]:
            assert plot["d0"] <= r["mean"] <= plot["d1"] and r["px"] == pytest.approx(x(r["mean"]), abs=0.01)
            assert r["ci"] == [pytest.approx(x(r["low"]), abs=0.01), pytest.approx(x(r["high"]), abs=0.01)]
            cut = (r["low"] < plot["d0"]) + (r["high"] > plot["d1"])
            assert r["cuts"] == cut and (cut == 0 or r["kind"] == "seed")
            cut_rows += bool(cut)
            assert r["labelRight"] < plot["r0"] and r["valueLeft"] > plot["r1"]
            colour = "#2ca02c" if r["low"] > 0 else "#d62728" if r["high"] < 0 else "#5f6b76"
            assert r["fill"] == colour
    auc = plots[0]["rows"]
    stored = data["by_variant"]["better"]["metrics"]["auc"]["delta"]
    assert (auc[0]["mean"], auc[0]["low"], auc[0]["high"]) == pytest.approx(
        (stored["mean"], stored["t_low"], stored["t_high"]))
    assert auc[0]["fill"] == "#2ca02c"  # every pair of "better" gains 8.5-11 points
    assert cut_rows > 0  # the wide per-seed interval of the markup-named variant ran past the axis
