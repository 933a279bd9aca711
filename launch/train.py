r"""Runs one recommendation experiment (FAIR, a baseline, or a reference).

  python -m launch.train --config=configs/ml100k.py --workdir=runs/demo \
      [--config.KEY=VALUE ...]

Writes WORKDIR/metrics.jsonl and prints a results table. Bad input ends
with exit code 2 and one `error:` line on stderr.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics and checkpoints go.")


def fail(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).replace("\n", " "))
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
  from fairjax import experiment  # pylint: disable=g-import-not-at-top
  from fairjax.errors import InputError  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    final = experiment.run(config, _WORKDIR.value)
  except InputError as e:
    fail(str(e))
  print(f"{config.algorithm} on {config.data.name or config.data.path} "
        f"({config.eval.protocol} protocol), round {final.get('round')}:")
  print(experiment.format_table(final, config.eval.protocol))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
