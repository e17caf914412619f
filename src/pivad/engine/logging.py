"""Training logs: one JSON object per line in ``log.jsonl``; TensorBoard events when installed."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from pivad.io import atomic_write_text


def _clean(value: Any) -> Any:
    """A logged value as strict JSON holds it: a non-finite float as its text ("nan", "inf"), at any depth."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricLogger:
    """Append-only JSONL log (``{"global_step", "phase", "step", **values}``) plus optional TensorBoard.

    ``enabled=False`` (ranks other than 0) makes every call a no-op.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 echo: bool = False) -> None:
        self.enabled = enabled
        self.echo = echo  # one stderr line per evaluation record (training without progress bars)
        self.path = Path(run_dir) / "log.jsonl"
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
            except Exception:  # tensorboard not installed (it is an optional extra)
                self._tb = None

    def truncate_after(self, global_step: int) -> None:
        """Drop records after ``global_step`` (a resumed run replays those steps)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("global_step", 0) <= global_step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, global_step: int, phase: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"global_step": global_step, "phase": phase, "step": step}
        record.update({k: _clean(v) for k, v in values.items()})
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self.echo and "selection_score" in values:
            print(evaluation_line(record), file=sys.stderr, flush=True)
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("global_step", "phase", "step") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{phase}/{key}", value, global_step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def evaluation_line(record: dict[str, Any]) -> str:
    """``teacher step 100 (global 100): selection 0.6123, auc 0.6, ...`` for one evaluation record."""
    shown = [("selection", record.get("selection_score"))]
    shown += [(k, v) for k, v in record.items()
              if k not in ("global_step", "phase", "step", "selection_score") and isinstance(v, (int, float))][:4]
    values = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in shown)
    return f"{record['phase']} step {record['step']} (global {record['global_step']}): {values}"


def read_log(path: str | Path) -> list[dict]:
    """Records of a ``log.jsonl`` (empty list if absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
