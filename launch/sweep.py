r"""Runs a grid of experiments and writes one results table plus plots.

  python -m launch.sweep --config=configs/ml1m.py --workdir=runs/sweep \
      [--algorithms=fair,fedavg,...] [--distributions=mild,wide,extreme] \
      [--seeds=0,1,2] [--config.KEY=VALUE ...]

Every cell (algorithm x capacity distribution x seed) runs in
WORKDIR/<distribution>/<algorithm>/seed<k> with the same config overrides
(e.g. --config.rounds=50 for all). Finished cells are reused, so a rerun
resumes. Writes WORKDIR/results.md, WORKDIR/results.csv and
WORKDIR/plots/*.png. `--distributions` takes names (mild, wide, extreme) or
"NAME=COMPRESSION:FRACTION,...;NAME=...".
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Base experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_ALGORITHMS = flags.DEFINE_string("algorithms", "", "Comma-separated algorithms (default all).")
_DISTRIBUTIONS = flags.DEFINE_string("distributions", "mild,wide,extreme",
                                     "Capacity distributions: names or NAME=SPEC;...")
_SEEDS = flags.DEFINE_string("seeds", "0,1,2", "Comma-separated training seeds.")
_COMPILE_CACHE = flags.DEFINE_bool(
    "compile_cache", True,
    "Keep compiled programs in WORKDIR/.jax_cache: cells of the same shapes (other seeds, "
    "other algorithms' identical levels) then skip XLA compilation.")
_SUMMARY_ONLY = flags.DEFINE_bool("summary_only", False,
                                  "Only tabulate the cells that already finished.")


def parse_flags(argv):
  rest = cli.parse_flags_or_fail(argv)
  cli.require_config_and_workdir(_CONFIG, _WORKDIR, "configs/ml1m.py")
  return rest


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from fairjax import sweep  # pylint: disable=g-import-not-at-top
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if _COMPILE_CACHE.value and not _SUMMARY_ONLY.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", os.path.join(_WORKDIR.value, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  try:
    algorithms = sweep.parse_algorithms(_ALGORITHMS.value)
    distributions = sweep.parse_distributions(_DISTRIBUTIONS.value)
    try:
      seeds = [int(s) for s in _SEEDS.value.split(",") if s.strip()]
    except ValueError:
      raise InputError(f"--seeds: not a comma-separated list of ints: {_SEEDS.value!r}")
    if not seeds:
      raise InputError("--seeds: empty")
    if _SUMMARY_ONLY.value:
      cells = sweep.finished_cells(_WORKDIR.value, algorithms, distributions, seeds)
    else:
      cells = sweep.run_grid(config, _WORKDIR.value, algorithms, distributions, seeds)
    if not cells:
      raise InputError(f"--workdir: no finished cells under {_WORKDIR.value}")
    rows = sweep.summarise(cells, config.eval.protocol)
    out = sweep.write_results(rows, cells, _WORKDIR.value, config.eval.protocol,
                              distributions, config.data.name or config.data.path)
  except InputError as e:
    cli.fail(str(e))
  print(sweep.markdown(rows, config.eval.protocol, distributions))
  print(f"wrote {out['markdown']}, {out['csv']} and {len(out['plots'])} plots")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
