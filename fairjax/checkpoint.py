"""Atomic checkpoints of a simulation state (a pytree of arrays + a round).

Each checkpoint is one `.npz` file written to a temporary name, fsynced and
renamed into place, so a crash mid-write leaves the previous checkpoint
intact and never a half-written one under a checkpoint's name.
"""
import glob
import os
import re

import jax
import numpy as np

_NAME = "ckpt_{:08d}.npz"
_PATTERN = re.compile(r"ckpt_(\d{8})\.npz$")


def save(directory, step, state, keep=2):
  """Writes `state` (a pytree of arrays) as checkpoint `step`."""
  os.makedirs(directory, exist_ok=True)
  leaves = jax.tree.leaves(jax.device_get(state))
  final = os.path.join(directory, _NAME.format(step))
  tmp = final + f".tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, **{f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
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
  found = []
  for path in glob.glob(os.path.join(directory, "ckpt_*.npz")):
    m = _PATTERN.search(os.path.basename(path))
    if m:
      found.append(int(m.group(1)))
  return sorted(found)


def latest(directory):
  """The newest completed step, or None."""
  s = steps(directory)
  return s[-1] if s else None


def restore(directory, step, template):
  """Loads checkpoint `step` into the structure (and dtypes) of `template`."""
  treedef = jax.tree.structure(template)
  ref = jax.tree.leaves(template)
  with np.load(os.path.join(directory, _NAME.format(step))) as z:
    leaves = [z[f"leaf_{i:05d}"] for i in range(len(ref))]
  for a, b in zip(leaves, ref):
    if a.shape != np.shape(b):
      raise ValueError(f"checkpoint {step} in {directory} does not match this config "
                       f"(leaf shape {a.shape} vs {np.shape(b)})")
  return jax.tree.unflatten(treedef, [np.asarray(a, dtype=np.asarray(b).dtype)
                                      for a, b in zip(leaves, ref)])
