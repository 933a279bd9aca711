"""Figures from metrics.jsonl files: metric against round, final metrics by algorithm.

Library code for `launch/plot.py`, `launch/sweep.py` and notebooks. Every
function takes plain records (the dicts of `metrics.read_metrics`) and
returns a matplotlib `Figure`; `save` writes it as PNG.

Example:
  runs = plotting.load_runs(["runs/fair", "runs/fedavg"])
  fig = plotting.plot_curves(runs, "ndcg@10")
  plotting.save(fig, "curves.png")
"""
import os
from typing import Mapping, Optional, Sequence

# matplotlib falls back to Agg without a display, and notebooks keep their
# inline backend, so nothing here picks one.
import matplotlib.pyplot as plt
import numpy as np

from fairjax import metrics

Records = Sequence[Mapping]


def load_runs(workdirs: Sequence[str], labels: Optional[Sequence[str]] = None):
  """Reads the metrics.jsonl of each run directory.

  Args:
    workdirs: run directories (each with a metrics.jsonl).
    labels: one label per run; defaults to the directory names.

  Returns:
    dict label -> list of records, in the given order.
  """
  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ValueError(f"{len(labels)} labels for {len(workdirs)} runs")
  return {label: metrics.read_metrics(w) for label, w in zip(labels, workdirs)}


def level_names(records: Records):
  """The capacity levels ("1x", "8x", ...) that records report, smallest c first."""
  names = {k.split("/")[1] for r in records for k in r if k.startswith("level/")}
  return sorted(names, key=lambda s: float(s[:-1]))


def _curve(records: Records, key):
  pts = [(r["round" if "round" in r else "epoch"], r[key]) for r in records
         if r.get(key) is not None and ("round" in r or "epoch" in r)]
  return np.array(pts, float).reshape(-1, 2)


def grid_shape(n):
  """(rows, columns) of a grid of n panels: at most 3 columns, rows as needed."""
  cols = min(n, 3 if n > 4 else 2 if n > 1 else 1)
  return -(-n // cols), cols


def plot_curves(runs: Mapping[str, Records], metric: str, per_level: bool = True,
                title: Optional[str] = None):
  """`metric` against round for several runs: overall, and per level if asked.

  A federated run is drawn in a level's panel only if it reports that level
  (it had clients there); a run without such clients is left out of the
  panel, never drawn at its overall value. Runs without rounds (popularity;
  centralized logs epochs) have no levels: they are references, drawn as a
  dashed horizontal line at their final overall value in every panel, with
  "(reference)" in the legend.

  Panels (overall first, then one per level) fill a grid of at most three
  columns, and the legend sits below the grid so it covers no curve.

  Args:
    runs: label -> records (see `load_runs`).
    metric: a metric name, e.g. "ndcg@10" or "recall@20".
    per_level: add one panel per capacity level found in any run.
    title: the figure's title.

  Returns:
    A matplotlib Figure; each axis's title is its panel's name ("overall",
    "1x", ...) and each drawn line's label is its run's label.
  """
  levels = level_names([r for recs in runs.values() for r in recs]) if per_level else []
  panels = [("overall", metric)] + [(lv, f"level/{lv}/{metric}") for lv in levels]
  rows, cols = grid_shape(len(panels))
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6),
                           squeeze=False, sharey=True)
  axes = axes.ravel()
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  handles = {}
  for ax, (name, key) in zip(axes, panels):
    for i, (label, records) in enumerate(runs.items()):
      color = colors[i % len(colors)]
      # Centralized logs epochs and popularity round 0: both are references.
      federated = any("epoch" not in r and r.get("round", 0) > 0 for r in records)
      if federated:
        pts = _curve(records, key)
        if len(pts):  # no points: the run had no clients at this level
          handles[label] = ax.plot(pts[:, 0], pts[:, 1], marker="o", ms=3, label=label,
                                   color=color)[0]
      elif records:
        # A reference has no levels: its overall value is what any level would get.
        last = records[-1]
        value = last.get(key) if last.get(key) is not None else last.get(metric)
        if value is not None:
          handles.setdefault(label, ax.axhline(value, ls="--", lw=1, color=color,
                                               label=f"{label} (reference)"))
    ax.set_title(name)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
  for r in range(rows):
    axes[r * cols].set_ylabel(metric)
  if handles:
    fig.legend(list(handles.values()), [h.get_label() for h in handles.values()],
               fontsize=8, loc="lower center", ncol=min(len(handles), 4), frameon=False)
  if title:
    fig.suptitle(title)
  legend_rows = -(-len(handles) // 4) if handles else 0
  fig.tight_layout(rect=(0, min(0.3, (0.25 * legend_rows + 0.1) / fig.get_figheight()), 1, 1))
  return fig


def plot_finals(rows: Sequence[Mapping], metric: str, group: str = "distribution",
                title: Optional[str] = None):
  """Grouped bars of a final metric: one group per `group` value, one bar per algorithm.

  Args:
    rows: dicts with "algorithm", `group`, f"{metric}" (mean) and
      optionally f"{metric}_std" (see `fairjax.sweep.summarise`).
    metric: the metric to draw.
    group: the key that groups bars (e.g. the capacity distribution).
    title: the figure's title.

  Returns:
    A matplotlib Figure.
  """
  groups = list(dict.fromkeys(r[group] for r in rows))
  algos = list(dict.fromkeys(r["algorithm"] for r in rows))
  width = 0.8 / max(1, len(algos))
  fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(groups) * len(algos) + 2), 4.0))
  for i, a in enumerate(algos):
    xs, ys, es = [], [], []
    for g, name in enumerate(groups):
      for r in rows:
        if r[group] == name and r["algorithm"] == a and r.get(metric) is not None:
          xs.append(g + (i - (len(algos) - 1) / 2) * width)
          ys.append(r[metric])
          es.append(r.get(f"{metric}_std") or 0.0)
    ax.bar(xs, ys, width, yerr=es, label=a, capsize=2)
  ax.set_xticks(range(len(groups)), groups)
  ax.set_ylabel(metric)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7, ncol=min(len(algos), 5), loc="upper center",
            bbox_to_anchor=(0.5, -0.1))
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return fig


def save(fig, path):
  """Writes `fig` as PNG (directories created) and closes it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
