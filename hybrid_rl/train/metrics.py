"""Per-step scalars to `<workdir>/metrics.jsonl` and TensorBoard, plus progress bars.

metrics.jsonl holds one JSON object per logged step: {"step": int, name: float}.
On resume, rows past the restored step (written after the last checkpoint of
a killed run) are dropped so the file reads as one uninterrupted run.
"""
import json
import math
import os
import sys
from typing import Any, Iterable, Mapping

import numpy as np
import tqdm


def json_safe(value: Any) -> Any:
  """value with every non-finite float as None (JSON has no NaN: json.dump would write
  a token other readers reject)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, Mapping):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  return value


def write_json(path: str, value: Any) -> None:
  """`value` as JSON at `path`, written whole or not at all (a temporary file of this
  process, renamed), in one format (sorted keys, no NaN): a file written again with the
  same content has the same bytes."""
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(json.dumps(json_safe(value), indent=2, sort_keys=True, default=str,
                       allow_nan=False) + "\n")
  os.replace(tmp, path)


def _to_float(value) -> float:
  value = float(np.asarray(value))
  return value if math.isfinite(value) else float("nan")


def read_metrics(path: str) -> list[dict]:
  """Rows of a metrics.jsonl file; a torn last line (killed writer) is skipped."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def truncate_after(path: str, step: int) -> None:
  """Keeps the rows of a JSONL file whose "step" is at most `step` (a resumed run writes
  the later steps again)."""
  rows = [r for r in read_metrics(path) if r.get("step", -1) <= step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  os.replace(tmp, path)


def append_rows(path: str, rows: Iterable[Mapping]) -> None:
  """Appends JSON rows (samples.jsonl: responses to read beside the metrics)."""
  with open(path, "a") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


class MetricsWriter:
  """Appends scalars to metrics.jsonl and (optionally) TensorBoard event files."""

  def __init__(self, workdir: str, *, tensorboard: bool = True,
               resume_step: int | None = None, filename: str = "metrics.jsonl"):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, filename)
    if resume_step is not None or os.path.exists(self.path):
      self._truncate_after(-1 if resume_step is None else resume_step)
    self._file = open(self.path, "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def _truncate_after(self, step: int) -> None:
    truncate_after(self.path, step)

  def write(self, step: int, scalars: Mapping[str, object]) -> dict:
    row = {"step": int(step)}
    row.update({k: _to_float(v) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        # A non-finite value stays in metrics.jsonl; TensorBoard would print a warning
        # for each one beside the skipped-step report.
        if k != "step" and math.isfinite(v):
          self._tb.add_scalar(k, v, global_step=step)
    return row

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             initial: int = 0, desc: str = "", enabled: bool = True) -> tqdm.tqdm:
  """tqdm bar with ETA; silent when disabled or when stderr is not a TTY."""
  return tqdm.tqdm(iterable, total=total, initial=initial, desc=desc,
                   disable=not (enabled and sys.stderr.isatty()),
                   dynamic_ncols=True, leave=False)


def short_summary(row: Mapping[str, float], keys: Iterable[str]) -> dict:
  """A few metrics formatted for a progress-bar postfix."""
  return {k: f"{row[k]:.4g}" for k in keys if k in row}
