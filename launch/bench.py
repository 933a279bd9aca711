r"""Runs a named benchmark, prints its table and writes it to BENCHMARKS.md.

  python -m launch.bench fair_round
  python -m launch.bench sparse_layer [--quick]
  python -m launch.bench heavy_round [--quick]
  python -m launch.bench fair_round --data=ratings.csv   # any interactions file
  python -m launch.bench compile_cache [--quick]   # make demo's first round, cold vs warm

Each benchmark lives in a library module and returns a `BenchResult`; this
file only prints it (the summary line last) and replaces the benchmark's
section of BENCHMARKS.md, between `<!-- bench:NAME -->` markers.
"""
import importlib
import os
import platform
import re
import sys

from absl import app
from absl import flags

from fairjax.errors import InputError

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smaller sizes, for a smoke test; BENCHMARKS.md untouched.")
_DATA = flags.DEFINE_string(
    "data", "", "fair_round only: an interactions file instead of MovieLens "
    "(implies --quick: BENCHMARKS.md untouched).")
_OUTPUT = flags.DEFINE_string(
    "output", "BENCHMARKS.md", "Markdown file whose section is replaced.")

# name -> "module:function"; the function takes quick=bool and returns an
# object with .markdown (str) and .summary (str, the last printed line).
BENCHMARKS = {
    "fair_round": "fairjax.benchmarks:fair_round",
    "fair_scaling": "fairjax.benchmarks:fair_scaling",
    "heavy_round": "fairjax.benchmarks:heavy_round",
    "sparse_layer": "sparse.benchmarks:sparse_layer",
    "compile_cache": "fairjax.compilation:bench_first_round",
}


def machine_line():
  import jax  # pylint: disable=g-import-not-at-top
  return (f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, jax {jax.__version__}, "
          f"backend {jax.default_backend()}.")


def write_section(path, name, body):
  """Replaces (or appends) the section of `path` delimited for `name`."""
  start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
  block = f"{start}\n{body.rstrip()}\n{end}"
  text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
  pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
  if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  with open(path, "w") as f:
    f.write(text)


def main(argv):
  if len(argv) != 2 or argv[1] not in BENCHMARKS:
    print(f"error: give one benchmark name, one of {sorted(BENCHMARKS)}",
          file=sys.stderr)
    sys.exit(2)
  name = argv[1]
  module, fn = BENCHMARKS[name].split(":")
  kwargs = {"quick": _QUICK.value or bool(_DATA.value)}
  if _DATA.value:
    if name != "fair_round":
      print(f"error: --data applies to fair_round only, not {name}", file=sys.stderr)
      sys.exit(2)
    kwargs["data_path"] = _DATA.value
  try:
    result = getattr(importlib.import_module(module), fn)(**kwargs)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(result.markdown)
  if not kwargs["quick"]:
    cmd = f"python -m launch.bench {name}"
    write_section(_OUTPUT.value, name,
                  f"## {name}\n\nCommand: `{cmd}`\n\n{machine_line()}\n\n"
                  f"{result.markdown}\n\n`{result.summary}`")
  print(result.summary)


if __name__ == "__main__":
  app.run(main)
