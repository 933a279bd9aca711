"""Federated algorithms as values, and the one registry of their names.

Every name list (config validation, the sweep, the README's table) derives
from `REGISTRY`. An algorithm is selected by `config.algorithm`, a name with
optional arguments: `"fedprox"` or `"fedprox:mu=0.1"`; the arguments are
the keyword arguments of its builder. See docs/design.md, "Algorithms as
values", for how to add one.
"""
import inspect

from fairjax.algorithms import base
from fairjax.algorithms import hashed
from fairjax.algorithms import heterofl as _heterofl
from fairjax.algorithms import fedhm as _fedhm
from fairjax.algorithms import fedprox as _fedprox
from fairjax.algorithms import reseed as _reseed
from fairjax.algorithms.base import Algorithm, Aggregator, Context, Level  # noqa: F401
from fairjax.algorithms.fedhm import fedhm_rank, low_rank_subspace  # noqa: F401
from fairjax.algorithms.heterofl import column_subspace, heterofl_width  # noqa: F401
from fairjax.errors import InputError

# name -> builder(ctx, **args) -> Algorithm. One line per algorithm.
# Tables list them in this order: the memory-blind bound, the baselines, FAIR's family.
REGISTRY = {
    "fedavg": hashed.fedavg,
    "drop": hashed.drop,
    "smallest": hashed.smallest,
    "heterofl": _heterofl.heterofl,
    "fedhm": _fedhm.fedhm,
    "fair": hashed.fair,
    "fair_inconsistent": hashed.fair_inconsistent,
    "fedprox": _fedprox.fedprox,
    "fair_reseed": _reseed.fair_reseed,
}
# Not federated: trained on all data at once, or no training at all.
REFERENCES = ("centralized", "popularity")


def federated():
  return tuple(REGISTRY)


def all_names():
  return federated() + REFERENCES


def parse(algorithm):
  """`"name:key=value,..."` -> (name, {key: value}); values parsed as numbers if they are."""
  name, _, rest = str(algorithm).partition(":")
  args = {}
  for part in filter(None, rest.split(",")):
    key, eq, value = part.partition("=")
    if not eq or not key.strip():
      raise InputError(f"algorithm: {algorithm!r}: arguments must read key=value")
    value = value.strip()
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    args[key.strip()] = value
  return name, args


def check(algorithm):
  """Raises InputError unless `algorithm` names a known algorithm with known arguments."""
  name, args = parse(algorithm)
  if name in REFERENCES:
    if args:
      raise InputError(f"algorithm: {name} takes no arguments, got {', '.join(args)}")
    return
  if name not in REGISTRY:
    raise InputError(f"algorithm: unknown algorithm {name!r}; choose one of "
                     f"{', '.join(all_names())}")
  accepted = list(inspect.signature(REGISTRY[name]).parameters)[1:]
  for key in args:
    if key not in accepted:
      raise InputError(f"algorithm: {name} has no argument {key!r}"
                       + (f"; it takes {', '.join(accepted)}" if accepted else ""))


def make(algorithm, ctx: base.Context) -> base.Algorithm:
  """The `Algorithm` that `config.algorithm` names, built on `ctx`."""
  check(algorithm)
  name, args = parse(algorithm)
  if name not in REGISTRY:
    raise InputError(f"algorithm: {name!r} is not a federated algorithm")
  return REGISTRY[name](ctx, **args)
