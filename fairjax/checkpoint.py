"""Atomic checkpoints of a simulation state (a pytree of arrays + a round).

Each checkpoint is one `.npz` file written to a temporary name, fsynced and
renamed into place (then the directory is fsynced), so a crash at any
moment leaves either the new checkpoint or none under its name: never a
half-written one. Temporary files of crashed writers are ignored and
removed by the next save. The newest `keep` checkpoints are kept; a
checkpoint that was damaged afterwards (a bad disk, a partial copy) is
skipped for the one before it.

A checkpoint also records the config it was written under, so rerunning a
workdir with different settings is refused instead of silently mixing two
experiments (only `RESUMABLE_KEYS` may change: extending a run is fine).

Why not orbax: the state is a few MB of host arrays saved every few dozen
rounds from one process, which a single npz file covers; orbax's atomic
directory commit would give the same guarantee for a slower import, more
files per step, and no point at which a test can kill a write midway.

Test hook: the environment variable `FAIRJAX_TEST_CRASH_AT` (`WHERE:STEP`)
makes the process SIGKILL itself at a named point, so crash-and-resume
tests are deterministic. `checkpoint:N` fires halfway through writing the
temporary file of checkpoint N; `round:N` (see `simulate.run`) fires after
round N has trained, before anything of it is written.
"""
import io
import json
import os
import re
import signal
import sys
import zipfile

import jax
import numpy as np

from fairjax.errors import InputError

CRASH_ENV = "FAIRJAX_TEST_CRASH_AT"
# Config keys that may differ between the runs that share one workdir.
RESUMABLE_KEYS = ("rounds", "checkpoint_every", "eval.every")

_NAME = "ckpt_{:08d}.npz"
_PATTERN = re.compile(r"ckpt_(\d{8})\.npz$")
_TMP = re.compile(r"ckpt_\d{8}\.npz\.tmp-\d+$")
_META = "__meta__"


def crash_point(where, step):
  """SIGKILLs this process if `FAIRJAX_TEST_CRASH_AT` is `where:step`.

  A test hook: SIGKILL runs no cleanup, exactly like a kill from outside.
  """
  if os.environ.get(CRASH_ENV) == f"{where}:{step}":
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def config_meta(config):
  """The config as a flat JSON-compatible dict {"a.b": value} (tuples as lists)."""
  out = {}

  def walk(node, prefix):
    for k, v in node.items():
      if hasattr(v, "items"):
        walk(v, f"{prefix}{k}.")
      else:
        out[prefix + k] = v
  walk(config.to_dict() if hasattr(config, "to_dict") else config, "")
  return json.loads(json.dumps(out))


def save(directory, step, state, keep=2, meta=None):
  """Writes `state` (a pytree of arrays) as checkpoint `step`, atomically.

  Args:
    directory: the checkpoint directory (created if needed).
    step: the round the state is at.
    state: a pytree of arrays.
    keep: how many of the newest checkpoints to keep.
    meta: an optional JSON-compatible dict stored alongside (e.g. the config).
  """
  os.makedirs(directory, exist_ok=True)
  leaves = jax.tree.leaves(jax.device_get(state))
  arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
  if meta is not None:
    arrays[_META] = np.array(json.dumps(meta, sort_keys=True))
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  data = buf.getbuffer()
  final = os.path.join(directory, _NAME.format(step))
  tmp = final + f".tmp-{os.getpid()}"
  for name in os.listdir(directory):  # leftovers of writers that crashed
    if _TMP.match(name):
      os.remove(os.path.join(directory, name))
  with open(tmp, "wb") as f:
    half = len(data) // 2
    f.write(data[:half])
    f.flush()
    crash_point("checkpoint", step)
    f.write(data[half:])
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, final)
  dir_fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)
  for old in steps(directory)[:-keep]:
    os.remove(os.path.join(directory, _NAME.format(old)))


def steps(directory):
  """Completed checkpoint steps in `directory`, ascending."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(m.group(1)) for m in map(_PATTERN.match, os.listdir(directory)) if m)


def latest(directory):
  """The newest completed step, or None."""
  s = steps(directory)
  return s[-1] if s else None


def _load(path):
  """(leaves dict, meta or None) of one checkpoint file; raises if unreadable."""
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  meta = arrays.pop(_META, None)
  return arrays, None if meta is None else json.loads(str(meta))


def _fill(template, arrays, path):
  """`arrays` in the structure and dtypes of `template`, or InputError."""
  ref = jax.tree.leaves(template)
  if len(arrays) != len(ref) or any(f"leaf_{i:05d}" not in arrays for i in range(len(ref))):
    raise InputError(f"{path}: checkpoint holds {len(arrays)} arrays, this config needs "
                     f"{len(ref)}; it was written by another experiment (use a new "
                     "--workdir)")
  leaves = [arrays[f"leaf_{i:05d}"] for i in range(len(ref))]
  for a, b in zip(leaves, ref):
    if a.shape != np.shape(b):
      raise InputError(f"{path}: checkpoint does not match this config (an array of "
                       f"shape {a.shape} where {np.shape(b)} is expected); use a new "
                       "--workdir")
  return jax.tree.unflatten(jax.tree.structure(template),
                            [np.asarray(a, dtype=np.asarray(b).dtype)
                             for a, b in zip(leaves, ref)])


def restore(directory, step, template):
  """Loads checkpoint `step` into the structure (and dtypes) of `template`."""
  path = os.path.join(directory, _NAME.format(step))
  return _fill(template, _load(path)[0], path)


def _check_meta(saved, current, path):
  changed = sorted(k for k in set(saved) & set(current)
                   if saved[k] != current[k] and k not in RESUMABLE_KEYS)
  if changed:
    shown = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    raise InputError(f"{path}: this workdir holds a run with another config ({shown}{more}); "
                     "rerun with the original settings or use a new --workdir")


def restore_latest(directory, template, meta=None):
  """The newest readable checkpoint, or (None, template) when there is none.

  A checkpoint that cannot be read (damaged after it was written) is skipped,
  with a warning, for the one before it.

  Args:
    directory: the checkpoint directory (may not exist).
    template: a pytree with the state's structure, shapes and dtypes.
    meta: if given, the meta (config) of this run; a checkpoint whose stored
      meta differs outside `RESUMABLE_KEYS` raises InputError.

  Returns:
    (step, state) of the checkpoint restored, or (None, template).

  Raises:
    InputError: the checkpoint belongs to another config, or checkpoints
      exist and none of them can be read.
  """
  found = steps(directory)
  for step in reversed(found):
    path = os.path.join(directory, _NAME.format(step))
    try:
      arrays, saved = _load(path)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
      # Only the type: numpy's own message suggests unpickling, bad advice here.
      print(f"warning: skipping unreadable checkpoint {path} ({type(e).__name__})",
            file=sys.stderr)
      continue
    if meta is not None and saved is not None:
      _check_meta(saved, meta, path)
    return step, _fill(template, arrays, path)
  if found:
    raise InputError(f"{directory}: no checkpoint there can be read; remove the directory "
                     "to start the run over")
  return None, template
