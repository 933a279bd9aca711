r"""Runs one recommendation experiment (FAIR, a baseline, or a reference).

  python -m launch.train --config=configs/ml100k.py --workdir=runs/demo \
      [--config.KEY=VALUE ...]

Writes WORKDIR/metrics.jsonl and prints a results table. Bad input ends
with exit code 2 and one `error:` line on stderr.

Several processes (hosts) share one run when each is started with
`--coordinator=HOST:PORT --num_processes=P --process_id=I` (or with
`--coordinator=auto` under Slurm / Open MPI, or JAX_COORDINATOR_ADDRESS set);
process 0 writes the metrics and checkpoints. See README, "Running on many
devices and machines".
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

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


def fail(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).replace("\n", " "))
  except (AttributeError, KeyError) as e:
    # ConfigDict names only the missing field; point at the flag that used it.
    field = str(e).strip("\"'")
    used = [a.split("=")[0] for a in argv
            if a.startswith("--config.") and field in a.split("=")[0].split(".")]
    fail(f"{used[0] if used else field}: no such config key (see configs/common.py)")
  except Exception as e:  # pylint: disable=broad-except
    # config_flags raises plain KeyError/ValueError/TypeError for bad overrides.
    fail(f"{type(e).__name__}: {e}".replace("\n", " "))
  logging.set_verbosity(logging.WARNING)
  if _CONFIG.value is None:
    fail("--config: required, e.g. --config=configs/ml100k.py")
  if not _WORKDIR.value:
    fail("--workdir: required")
  return rest


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  from fairjax import sharding  # pylint: disable=g-import-not-at-top
  distributed = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in distributed) or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    # Before anything else touches JAX: the backend is built once, for all processes.
    try:
      sharding.initialize_distributed(*distributed)
    except (ValueError, TypeError, RuntimeError) as e:
      fail(f"--coordinator/--num_processes/--process_id: {e}".replace("\n", " "))
  from fairjax import experiment  # pylint: disable=g-import-not-at-top
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    final = experiment.run(config, _WORKDIR.value)
  except InputError as e:
    fail(str(e))
  if not sharding.is_lead():
    return  # process 0 prints the table
  print(f"{config.algorithm} on {config.data.name or config.data.path} "
        f"({config.eval.protocol} protocol), round {final.get('round')}:")
  print(experiment.format_table(final, config.eval.protocol))
  if final.get("note"):
    print(f"note: {final['note']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
