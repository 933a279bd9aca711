"""Compilation: a persistent cache across runs, and how long compiling took.

XLA compiles each program once per shape and process; on ML-100K the round
and evaluation programs of a federated run take over a minute to compile on
2 cores, before the first round finishes. Two things help a person who
waits for that:

  * `enable_cache()` turns on JAX's persistent compilation cache, so a later
    run of the same shapes loads its programs from disk instead of compiling
    them (launch.train, launch.sweep and launch.sparse call it). The cache
    lives in `$FAIRJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/fairjax/jax`, else
    `~/.cache/fairjax/jax`; a directory set already (JAX_COMPILATION_CACHE_DIR
    or `jax.config`) wins, and `FAIRJAX_CACHE_DIR=none` turns it off.
  * `Tally` counts, from JAX's monitoring events, the seconds spent tracing
    and compiling and the programs loaded from the cache, so a run can say
    "round 1 took 85 s, 80 s of it compiling 14 programs".

Example:
  compilation.enable_cache()
  tally = compilation.Tally()
  ...  # run the first round
  print(tally.summary())
"""
import os
import threading
from typing import NamedTuple, Optional

import jax
from jax import monitoring

# The events JAX records for every program it builds (jax/_src/dispatch.py,
# jax/_src/compiler.py).
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_BACKEND = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_PHASES = dict(zip(_COMPILE_EVENTS, ("trace", "lower", "xla")))

_lock = threading.Lock()
_totals = {"seconds": 0.0, "programs": 0, "cache_hits": 0, "trace": 0.0, "lower": 0.0,
           "xla": 0.0}
_registered = False


def _on_duration(event, seconds, **kwargs):
  del kwargs
  if event in _COMPILE_EVENTS:
    with _lock:
      _totals["seconds"] += seconds
      _totals[_PHASES[event]] += seconds
      if event == _BACKEND:
        _totals["programs"] += 1


def _on_event(event, **kwargs):
  del kwargs
  if event == _CACHE_HIT:
    with _lock:
      _totals["cache_hits"] += 1


def _register():
  global _registered
  with _lock:
    if _registered:
      return
    _registered = True
  monitoring.register_event_duration_secs_listener(_on_duration)
  monitoring.register_event_listener(_on_event)


def default_cache_dir() -> Optional[str]:
  """Where `enable_cache` puts the cache (None: turned off by FAIRJAX_CACHE_DIR=none)."""
  env = os.environ.get("FAIRJAX_CACHE_DIR")
  if env is not None:
    return None if env.strip().lower() in ("", "none", "off", "0") else env
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "fairjax", "jax")


def enable_cache(path: Optional[str] = None, min_compile_seconds: float = 0.0) -> Optional[str]:
  """Turns on JAX's persistent compilation cache; returns its directory (or None).

  Args:
    path: the cache directory; default `default_cache_dir()`. A directory
      configured already (JAX_COMPILATION_CACHE_DIR, jax.config) is kept.
    min_compile_seconds: programs that compile faster are not stored. 0
      stores every one: JAX's default, 1 s, would leave out most of a small
      model's programs, and under load which ones pass a threshold changes
      from run to run.

  Returns:
    The directory in use, or None when the cache stays off (the directory
    cannot be created, or FAIRJAX_CACHE_DIR=none).
  """
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  path = path or default_cache_dir()
  if not path:
    return None
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # a read-only home: run without the cache
  jax.config.update("jax_compilation_cache_dir", path)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  if "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES" not in os.environ:
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path


def cache_dir() -> Optional[str]:
  """The persistent cache's directory, or None when it is off."""
  return jax.config.jax_compilation_cache_dir or None


class Tally:
  """Compile seconds, programs compiled and cache hits since it was made (or reset)."""

  def __init__(self):
    _register()
    self.reset()

  def reset(self):
    with _lock:
      self._start = dict(_totals)

  def counts(self):
    """dict: "seconds" (tracing + lowering + compiling), "programs", "cache_hits",
    and the seconds of each phase: "trace" (Python to jaxpr), "lower" (to
    MLIR), "xla" (XLA's compile, or the load from the persistent cache)."""
    with _lock:
      return {k: _totals[k] - self._start[k] for k in _totals}

  def summary(self) -> str:
    """E.g. "41.2s compiling 12 programs, 3 loaded from the cache"."""
    c = self.counts()
    text = (f"{c['seconds']:.1f}s compiling {c['programs']} program(s) (tracing "
            f"{c['trace']:.1f}s, lowering {c['lower']:.1f}s, XLA {c['xla']:.1f}s)")
    if c["cache_hits"]:
      text += f", {c['cache_hits']} loaded from the compilation cache"
    return text


# ------------------------------------------------------------------ benchmark


class BenchResult(NamedTuple):
  markdown: str
  summary: str


def _seconds_to_first_round(argv, cache, workdir, repo):
  """Runs launch.train until it prints 'round 1 done'; returns (seconds, that line)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, FAIRJAX_CACHE_DIR=cache)
  for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
    env.pop(k, None)
  start = time.time()
  proc = subprocess.Popen([sys.executable, "-m", "launch.train", f"--workdir={workdir}"] + argv,
                          cwd=repo, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  line = ""
  for line in proc.stderr:
    if "round 1 done" in line:
      break
  seconds = time.time() - start
  proc.kill()
  proc.wait()
  if "round 1 done" not in line:
    raise RuntimeError(f"launch.train ended before its first round: {line.strip()}")
  return seconds, line.strip()


def bench_first_round(quick=False, repeats=3):
  """Seconds until `make demo`'s first round, with an empty cache and then a warm one.

  Each repeat empties a fresh cache directory, runs launch.train on
  configs/ml100k.py (what `make demo` runs) until it reports round 1
  (cold), then runs it again in another workdir with that cache (warm).
  `quick` uses a small synthetic file instead of MovieLens-100K.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  root = tempfile.mkdtemp(prefix="fairjax-cache-bench-")
  argv = ["--config=configs/ml100k.py"]
  if quick:
    repeats = 1
    rows = ["user,item,rating,timestamp"]
    rng = np.random.default_rng(0)
    for u in range(40):
      rows += [f"u{u},i{i},5,{1000 + 10 * t}" for t, i in
               enumerate(rng.choice(30, 6, replace=False))]
    with open(os.path.join(root, "small.csv"), "w") as f:
      f.write("\n".join(rows) + "\n")
    argv += ["--config.data.name=", f"--config.data.path={root}/small.csv",
             "--config.embed_dim=8", "--config.mlp_layers=(16, 8)",
             "--config.clients_per_round=8", "--config.client.max_items=16",
             "--config.eval.num_negatives=9"]
  rows, cold, warm = [], [], []
  try:
    for rep in range(repeats):
      cache = os.path.join(root, f"cache{rep}")
      load = os.getloadavg()[0]
      c, c_line = _seconds_to_first_round(argv, cache, os.path.join(root, f"cold{rep}"), repo)
      w, w_line = _seconds_to_first_round(argv, cache, os.path.join(root, f"warm{rep}"), repo)
      cold.append(c)
      warm.append(w)
      rows.append(f"| {rep} | {c:.1f} | {w:.1f} | {c / w:.1f}x | {load:.1f} -> "
                  f"{os.getloadavg()[0]:.1f} |")
      rows.append(f"|  | `{c_line.split(': ', 1)[-1]}` | `{w_line.split(': ', 1)[-1]}` | | |")
  finally:
    shutil.rmtree(root, ignore_errors=True)
  ratios = [c / w for c, w in zip(cold, warm)]
  what = "a small synthetic file (--quick)" if quick else "MovieLens-100K"
  summary = (f"first round of `make demo` ({what}): {np.median(cold):.1f}s with an empty "
             f"compilation cache, {np.median(warm):.1f}s with it warm (medians of "
             f"{len(cold)}); each warm run {float(np.median(ratios)):.1f}x sooner than the cold "
             f"run just before it (median of the pairs' ratios; "
             f"{', '.join(f'{r:.1f}x' for r in ratios)})")
  md = "\n".join([
      "Seconds from starting `launch.train --config=configs/ml100k.py` (what `make demo` "
      "runs) until it reports its first round, with a fresh, empty compilation cache "
      "(cold), then again with the cache that run filled (warm), in another workdir. "
      "Each repeat is one cold/warm pair, run back to back; the load average (1 min) "
      "is read before the cold run and after the warm one. The second line of a repeat "
      "is what the run itself printed about its compilation.", "",
      "| repeat | cold (s) | warm (s) | cold / warm | load |", "|---|---|---|---|---|",
      *rows, "", f"**{summary}.**"])
  return BenchResult(md, summary)
