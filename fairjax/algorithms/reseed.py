"""FAIR with a fresh hash every round: consistent within a round, new across rounds.

In round r every client and the server hash with the seeds of round r, so
a round is a FAIR round (its levels nest and its clients agree) in a new
random subspace each time. A compressed level's updates then reach new
directions of the full tables round after round, where plain FAIR keeps
projecting them on the same subspace. Clients keep nothing of the hash
between rounds (their private user rows do not depend on it), so only the
server, when it broadcasts, lifts and evaluates, needs the round's seed;
evaluation after round r uses round r's hash.

  --config.algorithm=fair_reseed
"""
import numpy as np

from fairjax import subspace
from fairjax.algorithms import base
from fairjax.algorithms import hashed


def fair_reseed(ctx):
  """FAIR whose hash seeds are drawn anew, for everybody at once, every round."""
  # Nested averaging would need each round's projections; not offered.
  agg = base.make_aggregator(ctx.fair.aggregate, ctx.levels, name="fair_reseed")
  levels = tuple(hashed.hashed_level(ctx, c, nm, True, hashed.spec_at(ctx, c), agg,
                                     trace_seeds=True)
                 for c, nm in zip(ctx.levels.compressions, ctx.levels.names))
  paths = list(ctx.shapes)

  def seeds(rnd):
    return np.array([subspace.table_seed(p, ctx.hash_seed, int(rnd)) for p in paths],
                    np.int32)

  def client_seeds(users, rnd):
    return np.broadcast_to(seeds(rnd), (len(users), len(paths))).copy()
  return base.Algorithm(levels, agg, seeds, client_seeds)
