"""A study folder's summary: collect the finished pairs, summarise them, write ``NAME.{json,md,html}``.

:func:`report_study` reads the runs planned by :mod:`pivad.engine.study`; :func:`resummarise` re-renders
a stored ``NAME.json`` from its rows alone (a folder whose runs are gone). The statistics and the table
are :mod:`pivad.engine.study_summary`'s, the page :mod:`pivad.report.study`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

from pivad.engine.study import StudySpec, Variant, fingerprint, plan
from pivad.errors import ConfigError, DataError


def collect_rows(spec: StudySpec) -> list[dict]:
    """One row per pair whose teacher and π-VAD have both finished."""
    rows = []
    for name, ds, ts, job in plan(spec).students:
        sres, tres = job.run_dir / "result.json", job.teacher / "result.json"
        if not (sres.is_file() and tres.is_file()):
            continue
        s, t = _read_result(sres), _read_result(tres)
        rows.append({"variant": name, "data_seed": ds, "train_seed": ts, "teacher": t["best"],
                     "pivad": s["best"], "pivad_last": s["last"], "seconds": s["seconds"]})
    return rows


def _read_result(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable run result ({exc})") from None


def build_summary(rows: list[dict], variants: list[Variant], data_seeds: list[int], *, config: str,
                  preset: str | None, dataset: str = "", selection: str = "val", overrides: list[str] = (),
                  train_seeds: list[int] = (), fp: str | None = None) -> dict:
    """The summary object of ``NAME.json`` (the old keys first, as earlier studies wrote them)."""
    from pivad.engine.study_summary import summarise

    summary = summarise(rows, [v.name for v in variants], data_seeds)
    summary["variants"] = {v.name: v.text for v in variants}
    summary["preset"], summary["config"] = preset, config
    summary["rows"] = rows
    summary.update(dataset=dataset, selection=selection, overrides=list(overrides), data_seeds=list(data_seeds),
                   train_seeds=list(train_seeds), fingerprint=fp)
    return summary


def write_summary(out: Path, name: str, summary: dict) -> dict[str, Path]:
    """``OUT/NAME.json``, ``OUT/NAME.md`` and ``OUT/NAME.html``, each written atomically."""
    from pivad.engine.study_summary import render_markdown
    from pivad.io import atomic_write_json, atomic_write_text, json_safe
    from pivad.report.study import write_study_html

    summary = json_safe(summary)  # an interval of one pair is undefined: null, as a re-read summary holds it
    paths = {"json": out / f"{name}.json", "md": out / f"{name}.md", "html": out / f"{name}.html"}
    atomic_write_json(paths["json"], summary)
    atomic_write_text(paths["md"], render_markdown(summary) + "\n")
    write_study_html(paths["html"], summary, title=name)
    return paths


def report_study(spec: StudySpec) -> dict:
    """Summarise the finished pairs of a study folder; writes ``NAME.{json,md,html}``, returns the summary."""
    from pivad.config import from_dict

    rows = collect_rows(spec)
    runs = plan(spec)
    first = next(iter(runs.teachers.values()), None)
    cfg = from_dict(first.config) if first else None
    summary = build_summary(rows, spec.variants, spec.data_seeds if spec.synthetic else [],
                            config=spec.config or "configs/demo.yaml", preset=spec.preset,
                            dataset=cfg.data.name if cfg else "", selection=cfg.train.selection if cfg else "val",
                            overrides=spec.overrides, train_seeds=spec.train_seeds, fp=fingerprint(spec))
    if spec.family != 1:
        summary["family"] = spec.family
    summary["files"] = {k: str(p) for k, p in write_summary(spec.out, spec.name, summary).items()}
    return summary


def resummarise(path: Path, name: str, variants: list[Variant] | None = None, config: str | None = None,
                fp: str | None = None, data_seeds: list[int] | None = None,
                train_seeds: list[int] | None = None) -> dict:
    """Re-render a stored ``NAME.json`` from its rows alone (a study folder without its runs, such as the
    committed ``benchmarks/results/issue9``): the same tables, now with the HTML page. ``config``/``fp``:
    the config given on the command line and its fingerprint, refused when the summary is of another;
    ``variants`` (a bare name selects, overrides must match), ``data_seeds``, ``train_seeds``: the pairs kept."""
    try:
        stored = json.loads(path.read_text())
        rows, known = stored["rows"], stored["variants"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a study summary ({exc})") from None
    if config is not None and stored.get("config"):  # its fingerprint, or (older summaries) the file's name
        same = (stored["fingerprint"] == fp if stored.get("fingerprint") and fp
                else Path(stored["config"]).name == Path(config).name)
        if not same:
            raise ConfigError(f"{path}: a study of another config ({stored['config']}, not {config})")
    for v in variants or []:
        if v.name not in known:
            raise ConfigError(f"--variant {v.name}: not in {path} (it has: {', '.join(known)})")
        if v.overrides and v.text != known[v.name]:
            raise ConfigError(f"--variant {v.name}: {path} has it with other overrides ('{known[v.name]}')")
    names = [v.name for v in variants] if variants else list(known)
    listed = [Variant(n, tuple(known[n].split())) for n in names]
    if data_seeds is None:
        data_seeds = stored.get("data_seeds")
    if data_seeds is None:  # written before the seeds were stored: those of its rows
        data_seeds = sorted({r["data_seed"] for r in rows if r.get("data_seed") is not None})
    if train_seeds is None:
        train_seeds = stored.get("train_seeds") or sorted({r["train_seed"] for r in rows})
    kept = [r for r in rows if r["variant"] in names and r["train_seed"] in train_seeds
            and (r.get("data_seed") is None or r["data_seed"] in data_seeds)]
    summary = build_summary(kept, listed, data_seeds,
                            config=stored.get("config", ""), preset=stored.get("preset"),
                            dataset=stored.get("dataset", ""), selection=stored.get("selection", "val"),
                            overrides=stored.get("overrides") or [], train_seeds=train_seeds,
                            fp=stored.get("fingerprint"))
    if stored.get("family", 1) != 1:
        summary["family"] = stored["family"]
    summary["files"] = {k: str(p) for k, p in write_summary(path.parent, name, summary).items()}
    return summary
