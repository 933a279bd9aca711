"""What each federated algorithm trains at each capacity level.

An algorithm here is a plan: for every capacity level, whether its clients
take part, the subspace spec they train in, and the spec its users are
evaluated with. The round itself (broadcast collapsed params, run the
clients, reduce the expanded deltas) is shared and lives in `simulate.py`.

| algorithm          | level c trains                       | users of level c use |
|--------------------|--------------------------------------|----------------------|
| fair               | hashed tables at size m_c            | m_c                  |
| fair_inconsistent  | m_c, hashed with the client's seed   | m_c, own seed        |
| fedavg             | the full tables (ignores memory)     | full                 |
| drop               | full tables if c == 1, else nothing  | full                 |
| smallest           | the most compressed level's size     | that size            |

Devices that `drop` leaves out never train their private user embedding;
they are still evaluated (with the global model and their untrained user
embedding), so the table shows what leaving them out costs them.
"""
from typing import Mapping, NamedTuple, Optional, Tuple

from fairjax import subspace
from fairjax.capacity import Levels
from fairjax.errors import InputError

ALGORITHMS = ("fair", "fair_inconsistent", "fedavg", "drop", "smallest")


class LevelPlan(NamedTuple):
  compression: float
  name: str
  trains: bool
  spec: Mapping[Tuple[str, ...], subspace.TableSpec]
  eval_spec: Mapping[Tuple[str, ...], subspace.TableSpec]


class Plan(NamedTuple):
  levels: Tuple[LevelPlan, ...]
  inconsistent: bool  # clients hash with their own seeds


def make_plan(algorithm, levels: Levels, shapes, hash_seed, exact_sizes=False) -> Plan:
  """The per-level plan of `algorithm`.

  Args:
    algorithm: one of ALGORITHMS.
    levels: parsed capacity levels.
    shapes: dict param path -> (rows, cols) of the compressible tables.
    hash_seed: the run's hash seed.
    exact_sizes: sizes ceil(n*d/c) instead of the power-of-two ladder.

  Returns:
    A Plan.
  """
  if algorithm not in ALGORITHMS:
    raise InputError(f"algorithm: {algorithm!r} is not a federated algorithm here; "
                     f"choose one of {', '.join(ALGORITHMS)}")
  spec = lambda c: subspace.make_spec(shapes, c, hash_seed, exact=exact_sizes)
  full = spec(1)
  smallest = spec(max(levels.compressions))
  out = []
  for c, name in zip(levels.compressions, levels.names):
    if algorithm in ("fair", "fair_inconsistent"):
      s = spec(c)
      out.append(LevelPlan(c, name, True, s, s))
    elif algorithm == "fedavg":
      out.append(LevelPlan(c, name, True, full, full))
    elif algorithm == "drop":
      out.append(LevelPlan(c, name, c == 1, full, full))
    elif algorithm == "smallest":
      out.append(LevelPlan(c, name, True, smallest, smallest))
  if not any(p.trains for p in out):
    raise InputError(f"algorithm {algorithm}: no capacity level can take part "
                     f"(capacities {dict(zip(levels.compressions, levels.fractions))})")
  return Plan(tuple(out), algorithm == "fair_inconsistent")


def item_sizes(spec) -> Mapping[str, Optional[int]]:
  """Table name -> hashed size (None = plain) of a spec, for models.make_model."""
  return {path[0]: s.size for path, s in spec.items()}


def item_seeds(spec) -> Mapping[str, int]:
  return {path[0]: s.seed for path, s in spec.items()}
