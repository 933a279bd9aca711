"""Capacity levels: parsing "COMPRESSION:FRACTION,..." and assigning users."""
import math
from typing import NamedTuple, Tuple

import numpy as np

from fairjax.errors import InputError
from fairjax.metrics import level_name


class Levels(NamedTuple):
  """Capacity levels sorted by compression (1x first)."""
  compressions: Tuple[float, ...]
  fractions: Tuple[float, ...]

  @property
  def names(self):
    return tuple(level_name(c) for c in self.compressions)


def parse_capacities(text) -> Levels:
  """Parses "1:0.25,8:0.25,64:0.5" into Levels (validated).

  Raises:
    InputError: malformed entries, compression < 1, fractions that are not
      positive or do not sum to 1, repeated compressions.
  """
  if not isinstance(text, str) or not text.strip():
    raise InputError("capacities: empty; expected 'COMPRESSION:FRACTION,...' "
                     "such as '1:0.5,8:0.5'")
  pairs = {}
  for part in text.split(","):
    bits = part.strip().split(":")
    if len(bits) != 2:
      raise InputError(f"capacities: entry {part.strip()!r} is not COMPRESSION:FRACTION")
    try:
      c, f = float(bits[0]), float(bits[1])
    except ValueError:
      raise InputError(f"capacities: entry {part.strip()!r} has a non-numeric "
                       "compression or fraction") from None
    if not math.isfinite(c) or c < 1:
      raise InputError(f"capacities: compression {bits[0]!r} must be a number >= 1")
    if not math.isfinite(f) or f <= 0 or f > 1:
      raise InputError(f"capacities: fraction {bits[1]!r} of compression {bits[0]} must "
                       "be in (0, 1]")
    if c in pairs:
      raise InputError(f"capacities: compression {bits[0]} is listed twice")
    pairs[c] = f
  total = sum(pairs.values())
  if abs(total - 1.0) > 1e-6:
    raise InputError(f"capacities: fractions sum to {total:g}, not 1 ({text!r})")
  cs = tuple(sorted(pairs))
  return Levels(cs, tuple(pairs[c] for c in cs))


def assign_levels(num_users, levels: Levels, seed) -> np.ndarray:
  """Each user's level index: a seeded shuffle cut by the fractions."""
  counts = np.floor(np.asarray(levels.fractions) * num_users).astype(int)
  # Largest remainders take the users that flooring left over.
  rest = num_users - counts.sum()
  order = np.argsort(-(np.asarray(levels.fractions) * num_users - counts), kind="stable")
  counts[order[:rest]] += 1
  assignment = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(seed).permutation(assignment).astype(np.int32)
