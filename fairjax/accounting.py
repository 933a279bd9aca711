"""What a client of each level holds and sends, read from the arrays themselves."""
import jax
import jax.numpy as jnp
import numpy as np

from fairjax import models
from fairjax import subspace


def level_bytes(level, server_shapes, seeds, kind):
  """Bytes a client of `level` holds.

  Args:
    level: an `algorithms.Level`.
    server_shapes: shapes (`jax.ShapeDtypeStruct`s) of the server params.
    seeds: the round's seeds (`Algorithm.seeds`).
    kind: the model kind.

  Returns:
    dict: "shared" (what it downloads and uploads), "tables" (its
    compressible tables), "user" (its private user rows), "params" (all).
  """
  if not level.trains:
    return {"shared": 0, "tables": 0, "user": 0, "params": 0}
  params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), server_shapes)
  seeds = jnp.asarray(seeds)
  held = jax.jit(lambda p, s: level.held(p, level.broadcast(p, s), s))(params, seeds)
  user = jax.eval_shape(level.model.init, jax.random.PRNGKey(0))
  user_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(
      models.split_user_params(user, kind)[0]))
  shared_bytes = subspace.param_bytes(held)
  tables = sum(subspace.param_bytes(subspace._get(held, p)) for p in level.table_paths)  # pylint: disable=protected-access
  return {"shared": shared_bytes, "tables": tables, "user": user_bytes,
          "params": shared_bytes + user_bytes}
