r"""Runs one recommendation experiment (FAIR, a baseline, or a reference).

  python -m launch.train --config=configs/ml100k.py --workdir=runs/demo \
      [--config.KEY=VALUE ...]

Writes WORKDIR/metrics.jsonl and prints a results table. Progress goes to
stderr: how long compiling took, then a bar (or, without a terminal, a line
per evaluation). Compiled programs are kept in a persistent cache
(~/.cache/fairjax/jax; FAIRJAX_CACHE_DIR=DIR moves it, =none turns it off),
so a second run of the same shapes starts in seconds. Bad input ends with
exit code 2 and one `error:` line on stderr.

Several processes (hosts) share one run when each is started with
`--coordinator=HOST:PORT --num_processes=P --process_id=I` (or with
`--coordinator=auto` under Slurm / Open MPI, or JAX_COORDINATOR_ADDRESS set);
process 0 writes the metrics and checkpoints. See README, "Running on many
devices and machines".
"""
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics and checkpoints go.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "HOST:PORT of process 0 for a multi-process run, or 'auto' to "
    "detect it (Slurm, Open MPI, ...).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process's rank, 0 .. num_processes-1.")


def parse_flags(argv):
  rest = cli.parse_flags_or_fail(argv)
  cli.require_config_and_workdir(_CONFIG, _WORKDIR, "configs/ml100k.py")
  return rest


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from fairjax import sharding  # pylint: disable=g-import-not-at-top
  distributed = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in distributed) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    # Before anything else touches JAX: the backend is built once, for all processes.
    try:
      sharding.initialize_distributed(*distributed)
    except (ValueError, TypeError, RuntimeError) as e:
      cli.fail(f"--coordinator/--num_processes/--process_id: {e}".replace("\n", " "))
  # A second run of the same shapes loads its programs instead of compiling them.
  cli.enable_compilation_cache()
  from fairjax import experiment  # pylint: disable=g-import-not-at-top
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    final = experiment.run(config, _WORKDIR.value)
  except InputError as e:
    cli.fail(str(e))
  if not sharding.is_lead():
    return  # process 0 prints the table
  print(f"{config.algorithm} on {config.data.name or config.data.path} "
        f"({config.eval.protocol} protocol), round {final.get('round')}:")
  print(experiment.format_table(final, config.eval.protocol))
  explanation = experiment.explain_levels(final)
  if explanation:
    print(explanation)
  if final.get("note"):
    print(f"note: {final['note']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
