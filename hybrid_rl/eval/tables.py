"""Paper-style tables: mean +- 95% confidence interval over seeds, as markdown, CSV and LaTeX."""
import csv
import math
import os
from typing import Sequence

import numpy as np
from scipy import stats


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
  """(mean, half-width of the two-sided 95% t-interval); half-width is nan for n < 2."""
  x = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
  if x.size == 0:
    return float("nan"), float("nan")
  if x.size == 1:
    return float(x[0]), float("nan")
  half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
  return float(x.mean()), float(half)


def fmt(mean: float, half: float, scale: float = 100.0, digits: int = 1) -> str:
  """'12.3 +- 1.4' (percent by default); no interval for a single seed."""
  if math.isnan(mean):
    return "-"
  if math.isnan(half):
    return f"{mean * scale:.{digits}f}"
  return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def write_table(rows: list[dict], columns: Sequence[str], stem: str, *, title: str = "",
                notes: Sequence[str] = ()) -> dict:
  """Writes <stem>.md, .csv and .tex from rows of already formatted cells.

  Returns {"md": text, ...paths}. `notes` become lines above the table
  (setup, the papers' own numbers) in markdown and LaTeX comments.
  """
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  md = [f"### {title}", ""] if title else []
  md += [f"{n}  " for n in notes] + ([""] if notes else [])
  md += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  md += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
  text = "\n".join(md) + "\n"
  with open(stem + ".md", "w") as f:
    f.write(text)
  with open(stem + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  esc = lambda s: str(s).replace("±", r"$\pm$").replace("%", r"\%").replace("_", r"\_").replace("@", r"@")
  tex = [f"% {n}" for n in notes]
  tex += [r"\begin{tabular}{" + "l" * len(columns) + "}", r"\toprule",
          " & ".join(esc(c) for c in columns) + r" \\", r"\midrule"]
  tex += [" & ".join(esc(r.get(c, "")) for c in columns) + r" \\" for r in rows]
  tex += [r"\bottomrule", r"\end{tabular}"]
  with open(stem + ".tex", "w") as f:
    f.write("\n".join(tex) + "\n")
  return {"md": text, "md_path": stem + ".md", "csv_path": stem + ".csv",
          "tex_path": stem + ".tex"}
