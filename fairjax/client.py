"""One client's local training: pure, so a level's clients run under vmap.

A client holds the level's (collapsed) shared params, its own private user
embedding, and its interactions as a padded item list with a mask. It runs
`local_epochs` epochs of minibatch training with sampled negatives and
returns its new params; the caller turns them into a delta.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fairjax import models


class LocalConfig(NamedTuple):
  """Static settings of local training (hashable: a jit static argument)."""
  loss: str
  num_items: int
  num_negatives: int
  batch_size: int
  local_epochs: int


def sample_negatives(rng, items, mask, shape, num_items):
  """Uniform items, redrawn once where they hit the client's own items.

  A second draw leaves a collision with probability (density)^2, which is
  below 1e-3 on MovieLens; exact rejection would need a data-dependent loop.
  """
  k1, k2 = jax.random.split(rng)

  def hits(negs):
    return ((negs[..., None] == items) & mask).any(-1)
  negs = jax.random.randint(k1, shape, 0, num_items, dtype=jnp.int32)
  again = jax.random.randint(k2, shape, 0, num_items, dtype=jnp.int32)
  return jnp.where(hits(negs), again, negs)


def make_local_update(model: models.ModelDef, optimizer: optax.GradientTransformation,
                      cfg: LocalConfig):
  """Builds `update(shared, user, items, mask, rng, seeds) -> (shared, user, loss)`.

  Args:
    model: the client's model (one user row; item tables at its level).
    optimizer: the local optimizer (its state is reset every round).
    cfg: static local-training settings.

  Returns:
    A pure function over one client, suitable for vmap:
      shared: the level's params without user tables.
      user: the client's user tables (rows of 1).
      items: int32 [L] its training items, padded; mask: bool [L].
      rng: PRNG key. seeds: None or dict table -> int seed (inconsistent).
    It returns the new shared params, the new user params and the mean
    training loss over its valid minibatches.
  """
  loss_fn = models.get_loss(cfg.loss)
  bs = cfg.batch_size

  def update(shared, user, items, mask, rng, seeds=None):
    num = items.shape[0]
    steps = -(-num // bs)
    params = models.merge_user_params(user, shared)
    opt_state = optimizer.init(params)

    def objective(params, pos, negs, valid):
      # One apply over [positive, negatives] keeps the traced graph small.
      both = jnp.concatenate([pos[:, None], negs], axis=1)
      logits = model.apply(params, jnp.zeros_like(both), both, seeds)
      return loss_fn(logits[:, 0], logits[:, 1:], valid)

    def epoch(carry, key):
      params, opt_state = carry
      k_order, k_neg = jax.random.split(key)
      # Valid items first, in a fresh random order each epoch.
      order = jnp.argsort(jnp.where(mask, jax.random.uniform(k_order, (num,)), 2.0))
      pad = steps * bs - num
      order = jnp.pad(order, (0, pad))
      valid = jnp.pad(mask[order[:num]], (0, pad))
      order, valid = order.reshape(steps, bs), valid.reshape(steps, bs)

      def step(carry, xs):
        params, opt_state = carry
        idx, ok, key = xs
        pos = items[idx]
        negs = sample_negatives(key, items, mask, (bs, cfg.num_negatives), cfg.num_items)
        okf = ok.astype(jnp.float32)
        loss, grads = jax.value_and_grad(objective)(params, pos, negs, okf)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # A batch of padding must not move anything (Adam would, on zeros).
        live = ok.any()
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)
        return (keep(new_params, params), keep(new_state, opt_state)), (loss * live, live)

      keys = jax.random.split(k_neg, steps)
      (params, opt_state), (losses, lives) = jax.lax.scan(
          step, (params, opt_state), (order, valid, keys))
      return (params, opt_state), (losses.sum(), lives.sum())

    keys = jax.random.split(rng, cfg.local_epochs)
    (params, _), (loss_sum, live_sum) = jax.lax.scan(epoch, (params, opt_state), keys)
    user_new, shared_new = models.split_user_params(params, model.module.kind)
    loss = loss_sum.sum() / jnp.maximum(live_sum.sum(), 1)
    return shared_new, user_new, loss

  return update
