r"""Trains the BOLT-style sparse model from a config.

  python -m launch.sparse --config=configs/text.py \
      --config.data.path=FILE.csv --config.data.text_column=COL \
      --config.data.label_column=COL --workdir=DIR

Writes DIR/metrics.jsonl (`epoch`, `p@1`, `seconds` per epoch), prints a
line per epoch on stderr and a summary table (last and best P@1) on stdout.
Bad input (a file, a column, a config value) ends with one `error: ...` line
on stderr and exit code 2.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from launch import cli
from sparse import experiment
from sparse.errors import InputError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")


def _fail(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _WORKDIR.value:
    _fail("--workdir: give an output directory")
  cfg = cli.load_config(_CONFIG)
  if cfg is None:
    _fail("--config: give a config file")
  cli.enable_compilation_cache()
  try:
    experiment.check_config(cfg)
    arrays = None
    if cfg.task == "ml1m_next":
      # fairjax builds the task; sparse never imports fairjax.
      from fairjax.data import sequences  # pylint: disable=g-import-not-at-top
      from fairjax.errors import InputError as FairInputError  # pylint: disable=g-import-not-at-top
      try:
        arrays = sequences.next_item_task(cfg.data.path or cfg.data.name,
                                          cfg.data.history)
      except FairInputError as e:
        raise InputError(str(e)) from e
      with cfg.unlocked():
        cfg.task = "arrays"
    records = experiment.run(cfg, _WORKDIR.value, arrays=arrays, verbose=True)
  except InputError as e:
    _fail(str(e))
  source = cfg.data.get("name") or cfg.data.get("path") or cfg.task
  print(f"sparse model on {source}, {len(records)} epoch(s); metrics in "
        f"{_WORKDIR.value}/metrics.jsonl:")
  print(experiment.summary_table(records))


def _run():
  # Flag parsing errors (unknown config keys, bad values, missing config
  # file) become one line and exit code 2, like every other input error.
  try:
    argv = flags.FLAGS(sys.argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError,
          OSError, SyntaxError) as e:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    text = str(text).replace("\\n", " ").replace("\\'", "").replace("'", "")
    _fail("config: " + (" ".join(text.split()) or type(e).__name__))
  logging.set_verbosity(logging.WARNING)  # JAX's backend probing is no news
  app.run(main, argv=argv)


if __name__ == "__main__":
  _run()
