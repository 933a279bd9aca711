"""FedProx (Li et al., MLSys 2020) on FAIR's subspaces: a proximal local objective.

Every client minimises its loss plus `mu / 2 * ||w - w_start||^2` over the
params it shares with the server (its private user rows are not held to the
server's), where `w_start` is what it downloaded this round. The term keeps
clients with many local steps near the broadcast model, FedProx's remedy for
client drift under heterogeneous data. Levels, subspaces, lifts and
aggregation are FAIR's (`hashed.fair`); `mu=0` is FAIR itself.

On the sparse row step (`client.sparse_update`, an SGD client): the penalty's
gradient `mu (w - w_start)` is nonzero on every entry a client has moved, not
only on the rows of the batch, so its part of the step is a dense
O(table) update (see `client.make_step`); the loss's part stays a row
update. A compressed level's table is small, so this costs little there.
With an adam or adagrad client the tables take dense steps under a penalty
(`client.sparse_tables`): a row-sparse Adam cannot take a dense gradient.

  --config.algorithm=fedprox            # mu = 0.01
  --config.algorithm=fedprox:mu=0.1
"""
import math

import jax
import jax.numpy as jnp

from fairjax import models
from fairjax.algorithms import hashed
from fairjax.errors import InputError


def proximal(mu):
  """`penalty(params, anchor) = mu/2 ||shared(params) - shared(anchor)||^2`."""
  def penalty(params, anchor):
    user = set(models.USER_TABLES)
    sq = [jnp.sum(jnp.square(p - a)) for k in params if k not in user
          for p, a in zip(jax.tree.leaves(params[k]), jax.tree.leaves(anchor[k]))]
    return 0.5 * mu * sum(sq)
  return penalty


def fedprox(ctx, mu=0.01):
  """FAIR's levels, each client with FedProx's proximal term of strength `mu`."""
  if not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
    raise InputError(f"algorithm: fedprox:mu must be a finite number >= 0, got {mu!r}")
  build = hashed.consistent("fedprox", hashed.spec_at, lambda c: True,
                            penalty=proximal(float(mu)) if mu else None)
  return build(ctx)
