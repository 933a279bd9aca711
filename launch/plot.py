r"""Plots a metric against round for several runs, overall and per capacity level.

  python -m launch.plot --runs=runs/fair,runs/fedavg [--labels=FAIR,FedAvg] \
      --metric=ndcg@10 --out=figures/curves.png [--noper_level]

Reads each run's metrics.jsonl and writes one PNG: a panel for the overall
metric and one per capacity level (`level/<c>x/<metric>`), in a grid of at
most three columns with the legend below. A run appears in a level's panel
only if it had clients at that level. Runs without rounds (centralized,
popularity) are drawn as dashed reference lines in every panel.
"""
import os
import sys

from absl import app
from absl import flags

_RUNS = flags.DEFINE_list("runs", None, "Run directories (each with metrics.jsonl).")
_LABELS = flags.DEFINE_list("labels", None, "One label per run (default: directory names).")
_METRIC = flags.DEFINE_string("metric", "ndcg@10", "Metric to plot (hr@10, ndcg@10, "
                              "ndcg@20, recall@20, train_loss, ...).")
_OUT = flags.DEFINE_string("out", None, "Output PNG path.")
_PER_LEVEL = flags.DEFINE_bool("per_level", True, "One panel per capacity level.")
_TITLE = flags.DEFINE_string("title", None, "Figure title.")


def fail(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _RUNS.value:
    fail("--runs: give at least one run directory")
  if not _OUT.value:
    fail("--out: give an output .png path")
  for run in _RUNS.value:
    if not os.path.isfile(os.path.join(run, "metrics.jsonl")):
      fail(f"--runs: no metrics.jsonl in {run!r}")
  from fairjax import plotting  # pylint: disable=g-import-not-at-top
  try:
    runs = plotting.load_runs(_RUNS.value, _LABELS.value)
  except (ValueError, OSError) as e:
    fail(str(e))
  if not any(r.get(_METRIC.value) is not None for recs in runs.values() for r in recs):
    fail(f"--metric: no run reports {_METRIC.value!r}")
  fig = plotting.plot_curves(runs, _METRIC.value, _PER_LEVEL.value, _TITLE.value)
  print(plotting.save(fig, _OUT.value))


if __name__ == "__main__":
  app.run(main)
