"""Local training: the sparse-row SGD step against the dense one."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fairjax import client as client_lib
from fairjax import models

_ITEMS, _DIM = 50, 8


def _setup(c=None, kind="neumf", item_rank=None):
  sizes = None if c is None else {n: _ITEMS * _DIM // c for n in models.ITEM_TABLES}
  model = models.make_model(kind, 1, _ITEMS, _DIM, (16, 8), item_sizes=sizes,
                            seeds={n: 5 for n in models.ITEM_TABLES}, item_rank=item_rank)
  params = model.init(jax.random.PRNGKey(0))
  # Larger entries than the init's 0.01, so a step changes the logits visibly.
  params = {k: {"embedding": v["embedding"] * 30.0} if "embedding" in v else v
            for k, v in params.items()}
  items = jnp.array([3, 7, 7, 11, 20, 41, 2, 0, 0, 0], jnp.int32)
  mask = jnp.arange(10) < 7
  return model, params, items, mask


def _cfg(table_lr, epochs=1):
  return client_lib.LocalConfig("bce", _ITEMS, 4, 4, epochs, table_lr)


@pytest.mark.parametrize("c", [None, 4])
def test_sparse_step_equals_dense_sgd(c):
  model, params, items, mask = _setup(c)
  opt = optax.sgd(0.5)
  pos, negs, _ = client_lib.epoch_batches(jax.random.PRNGKey(4), items, mask, _cfg(0.5))
  args = (pos[0], negs[0], jnp.array([True, True, True, False]))
  dense = client_lib.make_step(model, opt, _cfg(0.0))
  sparse = client_lib.make_step(model, opt, _cfg(0.5))
  (p_d, _), (loss_d, _) = jax.jit(dense)(params, opt.init(params), *args)
  state = client_lib.init_opt_state(model, opt, _cfg(0.5), params)
  (p_s, _), (loss_s, _) = jax.jit(sparse)(params, state, *args)
  np.testing.assert_allclose(loss_s, loss_d, rtol=1e-6)
  chex.assert_trees_all_close(p_s, p_d, atol=1e-6)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), p_s, params)
  assert moved["item_gmf"]["embedding"] > 1e-4 and moved["user_mlp"]["embedding"] > 1e-4


def test_sparse_step_never_builds_a_table_gradient():
  # The dense step's gradient holds a whole table; the sparse one only rows.
  model, params, items, mask = _setup(None)
  opt = optax.sgd(0.5)
  args = (items[:4], jnp.stack([items[4:8]] * 4), jnp.ones(4, bool))
  table = params["item_gmf"]["embedding"].shape

  def count(step, state):
    jaxpr = jax.make_jaxpr(step)(params, state, *args).jaxpr
    return sum(1 for e in jaxpr.eqns for v in e.outvars if v.aval.shape == table)

  dense = count(client_lib.make_step(model, opt, _cfg(0.0)), opt.init(params))
  sparse = count(client_lib.make_step(model, opt, _cfg(0.5)),
                 client_lib.init_opt_state(model, opt, _cfg(0.5), params))
  # The sparse step's table-shaped values: the scatter's result for each of
  # item_gmf and item_mlp (both [50, 8]). The dense one adds zeros, gradients
  # and updates of the same shape.
  assert sparse <= 2 < dense


@pytest.mark.parametrize("c", [None, 4])
def test_local_update_is_the_same_with_sparse_tables_under_vmap(c):
  model, params, items, mask = _setup(c)
  user, shared = models.split_user_params(params, "neumf")
  opt = optax.sgd(0.5)
  stack = lambda t: jax.tree.map(lambda x: jnp.stack([x, x * 0.5]), t)
  masks = jnp.stack([mask, jnp.arange(10) < 3])
  rngs = jax.random.split(jax.random.PRNGKey(1), 2)
  outs = []
  for lr in (0.0, 0.5):
    update = client_lib.make_local_update(model, opt, _cfg(lr, epochs=2))
    outs.append(jax.jit(jax.vmap(update))(stack(shared), stack(user),
                                          jnp.stack([items, items]), masks, rngs))
  chex.assert_trees_all_close(outs[0], outs[1], atol=1e-5)


def test_inconsistent_seeds_take_the_same_sparse_step():
  model, params, items, mask = _setup(4)
  opt = optax.sgd(0.5)
  seeds = {n: jnp.int32(99) for n in models.ITEM_TABLES}
  args = (items[:4], jnp.stack([items[4:8]] * 4), jnp.ones(4, bool))
  (p_d, _), _ = client_lib.make_step(model, opt, _cfg(0.0))(params, opt.init(params), *args,
                                                            seeds)
  state = client_lib.init_opt_state(model, opt, _cfg(0.5), params)
  (p_s, _), _ = client_lib.make_step(model, opt, _cfg(0.5))(params, state, *args, seeds)
  chex.assert_trees_all_close(p_s, p_d, atol=1e-6)


def test_low_rank_factors_stay_dense():
  model, _, _, _ = _setup(None, item_rank=2)
  assert client_lib.sparse_tables(model, _cfg(0.5)) == ("user_gmf", "user_mlp")
  assert client_lib.sparse_tables(model, _cfg(0.0)) == ()


def test_epoch_batches_cover_the_valid_items_once_with_negatives_outside_them():
  _, _, items, mask = _setup(None)
  pos, negs, valid = client_lib.epoch_batches(jax.random.PRNGKey(0), items, mask, _cfg(0.5))
  chex.assert_shape((pos, negs, valid), ((3, 4), (3, 4, 4), (3, 4)))
  np.testing.assert_array_equal(np.sort(np.asarray(pos)[np.asarray(valid)]),
                                np.sort(np.asarray(items)[np.asarray(mask)]))
  own = set(np.asarray(items)[np.asarray(mask)].tolist())
  drawn = np.asarray(negs)[np.asarray(valid)].ravel()
  assert drawn.min() >= 0 and drawn.max() < _ITEMS
  # One redraw: a collision survives with probability (7/50)^2 per draw.
  assert np.mean([d in own for d in drawn]) < 0.1


def test_negatives_are_redrawn_exactly_where_they_hit_own_items():
  items = jnp.array([4, 9, 9, 17, 0, 0], jnp.int32)
  mask = jnp.array([True, True, True, True, False, False])
  rng = jax.random.PRNGKey(7)
  negs = client_lib.sample_negatives(rng, items, mask, (200, 3), 20)
  k1, k2 = jax.random.split(rng)
  first = jax.random.randint(k1, (200, 3), 0, 20, dtype=jnp.int32)
  again = jax.random.randint(k2, (200, 3), 0, 20, dtype=jnp.int32)
  own = np.isin(np.asarray(first), [4, 9, 17])  # 0 is padding, not an own item
  assert own.any() and (~own).any()
  np.testing.assert_array_equal(negs, np.where(own, again, first))
