"""Every check of a config that needs no data, in one place.

`validate(config)` raises `InputError` naming the culprit key; the entry
points turn that into one `error:` line and exit code 2.
"""
import math

from fairjax import algorithms
from fairjax import capacity
from fairjax import metrics
from fairjax.errors import InputError

EXECUTIONS = ("vmap", "scan")
PRIORS = ("popularity", "none")


def validate(config):
  """Checks `config` (an experiment ConfigDict) before any data is read."""
  algorithms.check(config.algorithm)
  if int(config.embed_dim) < 1:
    raise InputError(f"embed_dim: must be a positive integer, got {config.embed_dim}")
  if config.eval.every < 1:
    raise InputError(f"eval.every: must be >= 1, got {config.eval.every}")
  if config.eval.protocol not in metrics.PROTOCOLS:
    raise InputError(f"eval.protocol: unknown protocol {config.eval.protocol!r}; "
                     f"choose one of {', '.join(metrics.PROTOCOLS)}")
  if algorithms.parse(config.algorithm)[0] in algorithms.federated():
    capacity.parse_capacities(config.capacities)
    _federated(config)


def _nonnegative(key, value):
  if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
    raise InputError(f"{key}: must be a finite number >= 0, got {value!r}")
  return float(value)


def _federated(config):
  """The round loop's keys."""
  # pylint: disable=g-import-not-at-top
  from fairjax import centralized
  from fairjax import models
  from fairjax import sampling
  from fairjax.algorithms import base
  from fairjax.algorithms import hashed
  if int(config.checkpoint_every) < 1:
    raise InputError(f"checkpoint_every: must be >= 1, got {config.checkpoint_every}")
  for key in ("rounds", "clients_per_round", "local_epochs"):
    if int(config[key]) < 1:
      raise InputError(f"{key}: must be >= 1, got {config[key]}")
  for side in ("client", "server"):
    lr = config[side].lr
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
      raise InputError(f"{side}.lr: must be a positive number, got {lr!r}")
    try:
      centralized.make_optimizer(config[side].optimizer, lr)
    except InputError as e:  # "optimizer: unknown ...": say whose
      raise InputError(f"{side}.{e}") from None
  _nonnegative("server.eps", config.server.get("eps", 0.0))
  for key in ("max_update_norm", "clip_norm"):
    _nonnegative(f"server.{key}", config.server[key])
  c = config.client
  try:
    models.get_loss(c.loss)
  except InputError as e:
    raise InputError(f"client.{e}") from None
  if c.batch_size < 1 or c.num_negatives < 1 or c.max_items < 1:
    raise InputError("client: batch_size, num_negatives and max_items must be >= 1")
  if not 0.0 <= c.dropout <= 1.0:
    raise InputError(f"client.dropout: must be a probability in [0, 1], got {c.dropout}")
  if c.poison not in sampling.POISONS:
    raise InputError(f"client.poison: unknown mode {c.poison!r}; choose one of "
                     f"{', '.join(repr(p) for p in sampling.POISONS)}")
  prior = config.get("item_prior", "none")
  if prior not in PRIORS:
    raise InputError(f"item_prior: unknown prior {prior!r}; choose one of {', '.join(PRIORS)}")
  if prior != "none":
    knots = config.get("item_prior_knots", 32)
    if not isinstance(knots, int) or isinstance(knots, bool) or knots < 2:
      raise InputError(f"item_prior_knots: must be an integer >= 2, got {knots!r}")
    if config.data.get("item_order", "popularity") != "popularity":
      raise InputError(f"item_prior={prior} reads an item's popularity rank from its id: "
                       "set data.item_order=popularity (or item_prior=none)")
  fair = config.fair
  if fair.aggregate not in base.AGGREGATES:
    raise InputError(f"fair.aggregate: unknown mode {fair.aggregate!r}; choose one "
                     f"of {', '.join(base.AGGREGATES)}")
  hashed.powers(fair)  # fair.lift and fair.view
  from fairjax import subspace
  if fair.get("sizes", "pow2") not in subspace.SIZES:
    raise InputError(f"fair.sizes: unknown ladder {fair.sizes!r}; choose one of "
                     f"{', '.join(subspace.SIZES)}")
  if fair.get("layout", "hash") not in subspace.LAYOUTS:
    raise InputError(f"fair.layout: unknown layout {fair.layout!r}; choose one of "
                     f"{', '.join(subspace.LAYOUTS)}")
  _nonnegative("fair.level_weight", fair.get("level_weight", 0.0))
  if fair.execution not in EXECUTIONS:
    raise InputError(f"fair.execution: unknown mode {fair.execution!r}; choose one "
                     f"of {', '.join(EXECUTIONS)}")
