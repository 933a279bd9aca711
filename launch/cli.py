"""What every entry point shares: one `error:` line and exit code 2."""
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags


def fail(message):
  """Prints `error: message` on stderr and exits with code 2."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags_or_fail(argv):
  """absl flag parsing where every bad flag or config override exits 2.

  config_flags raises plain KeyError/ValueError/TypeError for a bad
  `--config.KEY=VALUE`, absl raises flags.Error for the rest.
  """
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
    fail(f"{type(e).__name__}: {e}".replace("\n", " "))
  logging.set_verbosity(logging.WARNING)
  return rest


def load_config(config_flag):
  """The config a `--config` flag names, or exit 2 saying why it cannot be loaded.

  config_flags defers a load failure (a missing file, an exception inside
  the file) to the first read of `.value`, as an OSError with a traceback.
  """
  value = config_flag.value
  try:
    if value is not None:
      getattr(value, "keys")  # a config that failed to load raises here
    return value
  except Exception as e:  # pylint: disable=broad-except
    try:
      name = config_flags.get_config_filename(flags.FLAGS[config_flag.name])
    except Exception:  # pylint: disable=broad-except
      name = "the config file"
    cause = e.__cause__ or e
    reason = str(cause).strip().splitlines()[-1].strip() if str(cause).strip() else ""
    fail(f"--config: cannot load {name}" + (f" ({reason})" if reason else ""))


def require_config_and_workdir(config_flag, workdir_flag, example):
  if load_config(config_flag) is None:
    fail(f"--config: required, e.g. --config={example}")
  if not workdir_flag.value:
    fail("--workdir: required")


def enable_compilation_cache():
  """JAX's persistent compilation cache (see fairjax/compilation.py)."""
  from fairjax import compilation  # pylint: disable=g-import-not-at-top
  return compilation.enable_cache()
