"""One experiment end to end: config -> data -> training -> metrics.jsonl.

`run(config, workdir)` is what `launch.train` calls and what a notebook can
call directly; it raises `InputError` for anything wrong in the input.
"""
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from fairjax import capacity
from fairjax import data as data_lib
from fairjax import evaluation
from fairjax import metrics
from fairjax.errors import InputError

FEDERATED = ("fair", "fedavg", "drop", "smallest", "heterofl", "fedhm",
             "fair_inconsistent")
ALGORITHMS = FEDERATED + ("centralized", "popularity")


def progress_bar(iterable, total, desc, initial=0):
  return tqdm(iterable, total=total, desc=desc, initial=initial, file=sys.stderr,
              dynamic_ncols=True, leave=False, disable=None)


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


def validate(config):
  if config.algorithm not in ALGORITHMS:
    raise InputError(f"algorithm: unknown algorithm {config.algorithm!r}; choose one of "
                     f"{', '.join(ALGORITHMS)}")
  if int(config.embed_dim) < 1:
    raise InputError(f"embed_dim: must be a positive integer, got {config.embed_dim}")
  if config.eval.every < 1:
    raise InputError(f"eval.every: must be >= 1, got {config.eval.every}")
  if config.algorithm in FEDERATED:
    capacity.parse_capacities(config.capacities)
    _validate_federated(config)
  if config.eval.protocol not in metrics.PROTOCOLS:
    raise InputError(f"eval.protocol: unknown protocol {config.eval.protocol!r}; "
                     f"choose one of {', '.join(metrics.PROTOCOLS)}")


def _validate_federated(config):
  """Checks the round-loop keys by their names, before any data is read."""
  # pylint: disable=g-import-not-at-top
  from fairjax import centralized
  from fairjax import models
  from fairjax import simulate
  if int(config.checkpoint_every) < 1:
    raise InputError(f"checkpoint_every: must be >= 1, got {config.checkpoint_every}")
  for side in ("client", "server"):
    lr = config[side].lr
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
      raise InputError(f"{side}.lr: must be a positive number, got {lr!r}")
    try:
      centralized.make_optimizer(config[side].optimizer, lr)
    except InputError as e:  # "optimizer: unknown ...": say whose
      raise InputError(f"{side}.{e}") from None
  try:
    models.get_loss(config.client.loss)
  except InputError as e:
    raise InputError(f"client.{e}") from None
  for key in ("max_update_norm", "clip_norm"):
    value = config.server[key]
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
      raise InputError(f"server.{key}: must be a finite number >= 0 (0 = off), got {value!r}")
  if config.client.poison not in simulate.POISONS:
    raise InputError(f"client.poison: unknown mode {config.client.poison!r}; choose one of "
                     f"{', '.join(repr(p) for p in simulate.POISONS)}")


def run(config, workdir, verbose=True):
  """Runs the experiment `config` in `workdir`; returns the final metrics."""
  validate(config)
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
  if algorithm in FEDERATED:
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
