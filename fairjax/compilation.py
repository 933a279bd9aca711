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
from typing import Optional

import jax
from jax import monitoring

# The events JAX records for every program it builds (jax/_src/dispatch.py,
# jax/_src/compiler.py).
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_BACKEND = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_totals = {"seconds": 0.0, "programs": 0, "cache_hits": 0}
_registered = False


def _on_duration(event, seconds, **kwargs):
  del kwargs
  if event in _COMPILE_EVENTS:
    with _lock:
      _totals["seconds"] += seconds
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


def enable_cache(path: Optional[str] = None, min_compile_seconds: float = 0.2) -> Optional[str]:
  """Turns on JAX's persistent compilation cache; returns its directory (or None).

  Args:
    path: the cache directory; default `default_cache_dir()`. A directory
      configured already (JAX_COMPILATION_CACHE_DIR, jax.config) is kept.
    min_compile_seconds: programs that compile faster are not stored (JAX's
      default, 1 s, would leave out most of a small model's programs).

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
    """dict: "seconds" (tracing + lowering + compiling), "programs", "cache_hits"."""
    with _lock:
      return {k: _totals[k] - self._start[k] for k in _totals}

  def summary(self) -> str:
    """E.g. "41.2s compiling 12 programs, 3 loaded from the cache"."""
    c = self.counts()
    text = f"{c['seconds']:.1f}s compiling {c['programs']} program(s)"
    if c["cache_hits"]:
      text += f", {c['cache_hits']} loaded from the compilation cache"
    return text
