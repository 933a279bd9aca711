"""One experiment end to end: config -> data -> training -> metrics.jsonl.

`run(config, workdir)` is what `launch.train` calls and what a notebook can
call directly; it raises `InputError` for anything wrong in the input.
"""
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from fairjax import algorithms
from fairjax import data as data_lib
from fairjax import evaluation
from fairjax import metrics
from fairjax import validation
from fairjax.errors import InputError

def progress_bar(iterable, total, desc, initial=0):
  """A tqdm bar on stderr (off without a terminal); it stays, with the last metrics."""
  return tqdm(iterable, total=total, desc=desc, initial=initial, file=sys.stderr,
              dynamic_ncols=True, leave=True, disable=None)


def prepare_workdir(workdir):
  if not workdir:
    raise InputError("--workdir: required")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write-test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise InputError(f"--workdir: cannot write to {workdir!r} ({e.strerror})") from None


def run(config, workdir, verbose=True):
  """Runs the experiment `config` in `workdir`; returns the final metrics."""
  validation.validate(config)
  prepare_workdir(workdir)
  start = time.time()
  dataset = data_lib.load(config.data)
  if not len(dataset.test_users):
    source = config.data.path or config.data.name
    raise InputError(f"{source}: the split left no test interactions (every user has a "
                     "single interaction?)")
  evaluate = evaluation.Evaluator(dataset, config.eval.protocol,
                                  config.eval.num_negatives, seed=config.seed)
  if verbose:
    print(f"data: {dataset.num_users} users, {dataset.num_items} items, "
          f"{len(dataset.train_users)} training and {len(dataset.test_users)} test "
          f"interactions ({time.time() - start:.1f}s)", file=sys.stderr)
  algorithm = config.algorithm
  if algorithms.parse(algorithm)[0] in algorithms.federated():
    from fairjax import simulate  # pylint: disable=g-import-not-at-top
    final = simulate.run(config, dataset, evaluate, workdir, progress_bar)
  else:
    from fairjax import sharding  # pylint: disable=g-import-not-at-top
    # Not sharded: under several processes each trains the same model, and
    # process 0 alone writes it down.
    writer = metrics.MetricsWriter(workdir) if sharding.is_lead() else None
    from fairjax import centralized  # pylint: disable=g-import-not-at-top
    records = []

    def log(record):
      records.append(dict(record))
    if algorithm == "centralized":
      centralized.train_centralized(config, dataset, evaluate, log, progress_bar)
    else:
      centralized.popularity(config, dataset, evaluate, log)
    final = dict(records[-1], final=True)
    final["time/total_seconds"] = time.time() - start
    for r in (records[:-1] + [final]) if writer else []:
      writer.write(r)
  return final


def format_table(final, protocol):
  """A short Markdown table of the final metrics, overall and per level."""
  names = metrics.metric_names(protocol)
  levels = sorted({k.split("/")[1] for k in final if k.startswith("level/")},
                  key=lambda s: float(s[:-1]))
  lines = ["| level | " + " | ".join(names) + " |",
           "|---|" + "---|" * len(names)]
  fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"
  lines.append("| overall | " + " | ".join(fmt(final.get(n)) for n in names) + " |")
  for lv in levels:
    lines.append(f"| {lv} | " + " | ".join(fmt(final.get(f"level/{lv}/{n}")) for n in names)
                 + " |")
  return "\n".join(lines)


def explain_levels(final):
  """One sentence under the table on what its level rows are, or None without levels."""
  levels = sorted({k.split("/")[1] for k in final if k.startswith("level/")},
                  key=lambda s: float(s[:-1]))
  if len(levels) < 2:
    return None
  return (f"Levels: each row scores the users whose devices hold item tables c times "
          f"smaller ({levels[0]} = {'the full model' if levels[0] == '1x' else 'the largest'});"
          " all levels train one shared model and each row is a few hundred users, so 1x can "
          "score below 8x: RESULTS.md, \"Reading the demo's table\", says why and what a "
          "run with every device at 1x reaches.")
