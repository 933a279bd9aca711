r"""Runs a named benchmark, prints its table and writes it to BENCHMARKS.md.

  python -m launch.bench fair_round
  python -m launch.bench sparse_layer [--quick]

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

_QUICK = flags.DEFINE_bool(
    "quick", False, "Smaller sizes, for a smoke test; BENCHMARKS.md untouched.")
_OUTPUT = flags.DEFINE_string(
    "output", "BENCHMARKS.md", "Markdown file whose section is replaced.")

# name -> "module:function"; the function takes quick=bool and returns an
# object with .markdown (str) and .summary (str, the last printed line).
BENCHMARKS = {
    "fair_round": "fairjax.benchmarks:fair_round",
    "fair_scaling": "fairjax.benchmarks:fair_scaling",
    "sparse_layer": "sparse.benchmarks:sparse_layer",
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
  result = getattr(importlib.import_module(module), fn)(quick=_QUICK.value)
  print(result.markdown)
  if not _QUICK.value:
    cmd = f"python -m launch.bench {name}"
    write_section(_OUTPUT.value, name,
                  f"## {name}\n\nCommand: `{cmd}`\n\n{machine_line()}\n\n"
                  f"{result.markdown}\n\n`{result.summary}`")
  print(result.summary)


if __name__ == "__main__":
  app.run(main)
