"""A grid of experiments (algorithms x capacity distributions x seeds) and its table.

`run_grid` runs every cell with `experiment.run` in its own directory
(`WORKDIR/<distribution>/<algorithm>/seed<k>`), skipping cells that already
finished, so an interrupted sweep resumes where it stopped. `summarise`
reduces the final records to mean and spread over seeds, overall and per
capacity level; `write_results` writes them as Markdown and CSV and draws
the figures.

Centralized training and popularity do not depend on the devices' memory:
they run once per seed (under `WORKDIR/reference/`) and are listed under
every distribution. They report overall metrics only (no per-level rows).

Example:
  config = ml1m.get_config(); config.rounds = 50
  cells = sweep.run_grid(config, "runs/sweep", ["fair", "fedavg"], ["wide"], [0, 1, 2])
  rows = sweep.summarise(cells, config.eval.protocol)
  sweep.write_results(rows, cells, "runs/sweep", config.eval.protocol)
"""
import copy
import csv
import json
import os
import sys
import time
from typing import Mapping, NamedTuple, Optional, Sequence

import jax
import numpy as np

from fairjax import algorithms
from fairjax import capacity
from fairjax import experiment
from fairjax import metrics
from fairjax.errors import InputError

DISTRIBUTIONS = {
    "mild": "1:0.5,4:0.5",
    "wide": "1:0.25,8:0.25,64:0.25,512:0.25",
    "extreme": "1:0.1,16:0.3,256:0.3,4096:0.3",
}
# Table order: the registry's (the memory-blind bound, the baselines, FAIR's
# family), then the references.
ORDER = algorithms.all_names()
REFERENCES = algorithms.REFERENCES
# Methods that leave devices out when memory is short (FAIR's comparison set).
EXCLUDING = ("drop", "heterofl", "fedhm")


class Cell(NamedTuple):
  """One finished run of the grid."""
  distribution: str
  algorithm: str
  seed: int
  workdir: str
  final: Mapping


def parse_distributions(text: str) -> Mapping[str, str]:
  """Named capacity distributions from a flag.

  Args:
    text: comma-separated names of `DISTRIBUTIONS` ("mild,wide"), or
      semicolon-separated `name=COMPRESSION:FRACTION,...` entries.

  Returns:
    dict name -> capacities string, in the given order.

  Raises:
    InputError: an unknown name or a malformed distribution.
  """
  out = {}
  if "=" in text:
    for part in filter(None, (p.strip() for p in text.split(";"))):
      name, _, spec = part.partition("=")
      if not name or not spec:
        raise InputError(f"--distributions: {part!r} is not NAME=COMPRESSION:FRACTION,...")
      out[name.strip()] = spec.strip()
  else:
    for name in filter(None, (p.strip() for p in text.split(","))):
      if name not in DISTRIBUTIONS:
        raise InputError(f"--distributions: unknown distribution {name!r}; choose from "
                         f"{', '.join(DISTRIBUTIONS)} or give NAME=SPEC;...")
      out[name] = DISTRIBUTIONS[name]
  if not out:
    raise InputError("--distributions: empty")
  for spec in out.values():
    capacity.parse_capacities(spec)
  return out


def parse_algorithms(text: str) -> Sequence[str]:
  names = [a.strip() for a in text.split(",") if a.strip()] if text else list(ORDER)
  for a in names:
    try:
      algorithms.check(a)
    except InputError as e:
      raise InputError(f"--algorithms: {e}") from None
  return names


def cell_dir(workdir, distribution, algorithm, seed):
  if algorithm in REFERENCES:
    return os.path.join(workdir, "reference", algorithm, f"seed{seed}")
  return os.path.join(workdir, distribution, algorithm, f"seed{seed}")


def _finished(path):
  try:
    records = metrics.read_metrics(path)
  except OSError:
    return None
  return records[-1] if records and records[-1].get("final") else None


def run_grid(config, workdir: str, algorithms: Sequence[str], distributions: Mapping[str, str],
             seeds: Sequence[int], log=None):
  """Runs (or finds finished) every cell of the grid.

  Args:
    config: the base experiment config; every cell copies it and sets
      `algorithm`, `capacities` and `seed` (and `data.seed` stays fixed, so
      every cell sees the same split).
    workdir: root directory of the sweep.
    algorithms: algorithm names.
    distributions: name -> capacities string (see `parse_distributions`).
    seeds: training seeds.
    log: callable(str) for progress lines; defaults to stderr.

  Returns:
    list of `Cell`, one per (distribution, algorithm, seed).
  """
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  cells = []
  for seed in seeds:
    for dist, spec in distributions.items():
      for algorithm in algorithms:
        path = cell_dir(workdir, dist, algorithm, seed)
        final = _finished(path)
        if final is None:
          cfg = copy.deepcopy(config)
          cfg.algorithm = algorithm
          cfg.capacities = spec
          cfg.seed = int(seed)
          start = time.time()
          log(f"[sweep] {dist} {algorithm} seed {seed} -> {path}")
          final = experiment.run(cfg, path, verbose=False)
          # Each cell compiles its own programs; dropping them keeps a long
          # sweep from running out of LLVM code memory (seen after ~20 cells
          # of ML-1M in one process). The persistent cache, if on, keeps them.
          jax.clear_caches()
          log(f"[sweep] {dist} {algorithm} seed {seed}: {time.time() - start:.0f}s")
        cells.append(Cell(dist, algorithm, int(seed), path, final))
  return cells


def finished_cells(workdir, algorithms, distributions, seeds):
  """The cells of the grid that already finished (for tabulating a partial sweep)."""
  cells = []
  for seed in seeds:
    for dist in distributions:
      for algorithm in algorithms:
        path = cell_dir(workdir, dist, algorithm, seed)
        final = _finished(path)
        if final is not None:
          cells.append(Cell(dist, algorithm, int(seed), path, final))
  return cells


def _stats(values):
  vals = np.array([v for v in values if v is not None], float)
  if not len(vals):
    return None, None
  return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def summarise(cells: Sequence[Cell], protocol: str):
  """Mean and spread (sample std) over seeds per (distribution, algorithm).

  Args:
    cells: the grid's cells.
    protocol: "sampled", "full" or "both" (which metrics to keep).

  Returns:
    list of dicts with "distribution", "algorithm", "seeds", "excluded_clients"
    and, for every metric `m` overall and `level/<c>x/m`, `m` (mean) and
    `m_std`; in `ORDER` within each distribution.
  """
  names = metrics.metric_names(protocol)
  groups = {}
  for c in cells:
    groups.setdefault((c.distribution, c.algorithm), []).append(c)
  rank = {a: i for i, a in enumerate(ORDER)}
  dists = list(dict.fromkeys(c.distribution for c in cells))
  keys = sorted(groups, key=lambda k: (dists.index(k[0]), rank.get(k[1], len(ORDER)), k[1]))
  rows = []
  for dist, algorithm in keys:
    group = groups[(dist, algorithm)]
    finals = [c.final for c in group]
    row = {"distribution": dist, "algorithm": algorithm, "seeds": len(group)}
    excluded = [f.get("excluded_clients") for f in finals]
    row["excluded_clients"] = excluded[0] if algorithm not in REFERENCES else None
    levels = sorted({k.split("/")[1] for f in finals for k in f if k.startswith("level/")},
                    key=lambda s: float(s[:-1]))
    for key in list(names) + [f"level/{lv}/{m}" for lv in levels for m in names]:
      row[key], row[f"{key}_std"] = _stats([f.get(key) for f in finals])
    rows.append(row)
  return rows


def margins(rows, metric):
  """FAIR's margin over the best method that had to exclude devices, per distribution.

  Args:
    rows: `summarise` output.
    metric: the metric compared.

  Returns:
    list of dicts: distribution, fair, best excluding method and its value,
    margin (fair - best), and the excluded clients of that method.
  """
  out = []
  for dist in dict.fromkeys(r["distribution"] for r in rows):
    here = {r["algorithm"]: r for r in rows if r["distribution"] == dist}
    fair = here.get("fair", {}).get(metric)
    rivals = [(r[metric], a) for a, r in here.items()
              if a in EXCLUDING and r.get(metric) is not None and r.get("excluded_clients")]
    if fair is None or not rivals:
      continue
    best, name = max(rivals)
    out.append({"distribution": dist, "fair": fair, "best_excluding": name, "best": best,
                "margin": fair - best, "excluded_clients": here[name]["excluded_clients"]})
  return out


def _fmt(mean, std):
  if mean is None:
    return "—"
  return f"{mean:.4f} ± {std:.4f}" if std else f"{mean:.4f}"


def markdown(rows, protocol, distributions: Optional[Mapping[str, str]] = None):
  """The results as Markdown: one table per distribution, then FAIR's margins.

  With protocol "both", the sampled-protocol tables and then the full-protocol ones.
  """
  if protocol == "both":
    return "\n".join(markdown(rows, p, distributions) for p in ("sampled", "full"))
  names = metrics.metric_names(protocol)
  lines = []
  for dist in dict.fromkeys(r["distribution"] for r in rows):
    part = [r for r in rows if r["distribution"] == dist]
    levels = sorted({k.split("/")[1] for r in part for k in r
                     if k.startswith("level/") and not k.endswith("_std")},
                    key=lambda s: float(s[:-1]))
    spec = f" (`{distributions[dist]}`)" if distributions and dist in distributions else ""
    lines.append(f"**{dist}**{spec}, {protocol} protocol, mean ± std over seeds; "
                 f"per-level columns show {names[1]}.\n")
    head = ["algorithm", "seeds", "excluded"] + list(names) + [f"{lv} {names[1]}"
                                                                for lv in levels]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in part:
      excl = "—" if r["excluded_clients"] is None else str(r["excluded_clients"])
      cells = [r["algorithm"], str(r["seeds"]), excl]
      cells += [_fmt(r.get(m), r.get(f"{m}_std")) for m in names]
      cells += [_fmt(r.get(f"level/{lv}/{names[1]}"), r.get(f"level/{lv}/{names[1]}_std"))
                for lv in levels]
      lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
  marg = margins(rows, names[1])
  if marg:
    lines.append(f"FAIR's margin in {names[1]} over the best method that excluded devices:\n")
    lines.append("| distribution | fair | best excluding method | its value | excluded "
                 "devices | margin |")
    lines.append("|---|---|---|---|---|---|")
    for m in marg:
      lines.append(f"| {m['distribution']} | {m['fair']:.4f} | {m['best_excluding']} | "
                   f"{m['best']:.4f} | {m['excluded_clients']} | {m['margin']:+.4f} |")
    lines.append("")
  return "\n".join(lines)


def final_title(metric, protocol, rows, dataset=None):
  """A final-metric figure's title: data set, protocol, and what the bars are."""
  seeds = sorted({int(r.get("seeds", 1)) for r in rows})
  spread = (f"mean ± std over {seeds[0]} seeds" if seeds and seeds[0] > 1 and len(seeds) == 1
            else "mean ± std over seeds" if seeds and max(seeds) > 1 else "one seed")
  where = f"{dataset}: " if dataset else ""
  return f"{where}final {metric} ({protocol} protocol; bars: {spread})"


def write_results(rows, cells, workdir, protocol, distributions=None, dataset=None):
  """Writes WORKDIR/results.md, results.csv, and PNG figures under WORKDIR/plots/.

  `dataset` (e.g. "ml-1m") goes into the figures' titles.

  Returns:
    dict with the paths written ("markdown", "csv", "plots").
  """
  from fairjax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib is slow)
  os.makedirs(workdir, exist_ok=True)
  md_path = os.path.join(workdir, "results.md")
  with open(md_path, "w") as f:
    f.write(markdown(rows, protocol, distributions) + "\n")
  csv_path = os.path.join(workdir, "results.csv")
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
  names = metrics.metric_names(protocol)
  plots = []
  for m in names:
    fig = plotting.plot_finals(rows, m, title=final_title(m, protocol, rows, dataset))
    plots.append(plotting.save(fig, os.path.join(workdir, "plots", f"final_{m}.png")))
  first_seed = min(c.seed for c in cells)
  for dist in dict.fromkeys(c.distribution for c in cells):
    runs = {c.algorithm: metrics.read_metrics(c.workdir) for c in cells
            if c.distribution == dist and c.seed == first_seed}
    where = f"{dataset}, " if dataset else ""
    fig = plotting.plot_curves(runs, names[1], title=f"{where}{dist}, seed {first_seed}")
    plots.append(plotting.save(fig, os.path.join(workdir, "plots", f"curves_{dist}.png")))
  with open(os.path.join(workdir, "cells.json"), "w") as f:
    json.dump([{"distribution": c.distribution, "algorithm": c.algorithm, "seed": c.seed,
                "workdir": c.workdir} for c in cells], f, indent=1)
  return {"markdown": md_path, "csv": csv_path, "plots": plots}
