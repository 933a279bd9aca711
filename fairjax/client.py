"""One client's local training: pure, so a level's clients run under vmap.

A client holds the level's (collapsed) shared params, its own private user
embedding, and its interactions as a padded item list with a mask. It runs
`local_epochs` epochs of minibatch training with sampled negatives and
returns its new params; the caller turns them into a delta.

The pieces (`epoch_batches`, `make_step`) are public so that a plain Python
loop can run exactly the same math one jitted step at a time (the baseline
of `launch.bench fair_round`).
"""
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from fairjax import models
from fairjax import rowopt
from fairjax import subspace


class LocalConfig(NamedTuple):
  """Static settings of local training (hashable: a jit static argument)."""
  loss: str
  num_items: int
  num_negatives: int
  batch_size: int
  local_epochs: int
  # > 0: embedding tables take plain SGD steps of this size as sparse row
  # updates (`subspace.lookup_add`), costing O(batch * cols) per step instead
  # of O(table); the optimizer then sees only the other params. The same
  # math as `optax.sgd(table_lr)` on the whole model; the simulator turns it
  # on when the client optimizer is sgd.
  table_lr: float = 0.0
  # A row-sparse Adam or Adagrad for the item tables (`fairjax.rowopt`; the
  # simulator sets it when the client optimizer is adam or adagrad): a step
  # updates the rows (hashed: elements) its valid examples look up, and
  # the optimizer updates the other params, user rows included.
  table_opt: Optional[rowopt.RowOptimizer] = None


def row_optimizer(cfg: LocalConfig) -> Optional[rowopt.RowOptimizer]:
  """The row-sparse optimizer of the tables, or None (dense steps)."""
  if cfg.table_lr > 0:
    return rowopt.RowOptimizer("sgd", cfg.table_lr)
  return cfg.table_opt


def sample_negatives(rng, items, mask, shape, num_items):
  """Uniform items, redrawn once where they hit the client's own items.

  A second draw leaves a collision with probability (density)^2, which is
  below 1e-3 on MovieLens; exact rejection would need a data-dependent loop.
  """
  k1, k2 = jax.random.split(rng)
  # Membership by binary search in the sorted items (padding sorts last, as
  # an id no draw can take): O(draws * log L), where comparing every draw
  # with every item cost O(draws * L) and dominated a round.
  own = jnp.sort(jnp.where(mask, items, num_items))

  def hits(negs):
    at = jnp.searchsorted(own, negs.ravel(), method="scan").reshape(negs.shape)
    return own[jnp.minimum(at, own.shape[0] - 1)] == negs
  negs = jax.random.randint(k1, shape, 0, num_items, dtype=jnp.int32)
  again = jax.random.randint(k2, shape, 0, num_items, dtype=jnp.int32)
  return jnp.where(hits(negs), again, negs)


def epoch_keys(rng, local_epochs):
  return jax.random.split(rng, local_epochs)


def epoch_batches(key, items, mask, cfg: LocalConfig):
  """One epoch's minibatches, negatives included: valid items first, in a fresh order.

  The whole epoch's negatives are drawn in one call (one PRNG call per
  epoch, not per step: on CPU a small draw costs about as much as a large one).

  Args:
    key: the epoch's PRNG key.
    items: int32 [L], the client's item slots; mask: bool [L], the valid ones.
    cfg: local settings (batch_size B, num_negatives K, num_items).

  Returns:
    (pos int32 [S, B], negs int32 [S, B, K], valid bool [S, B]) with
    S = ceil(L / B); steps past the client's data are all-invalid.
  """
  num = mask.shape[0]
  steps = -(-num // cfg.batch_size)
  k_order, k_neg = jax.random.split(key)
  order = jnp.argsort(jnp.where(mask, jax.random.uniform(k_order, (num,)), 2.0))
  pad = steps * cfg.batch_size - num
  order = jnp.pad(order, (0, pad)).reshape(steps, cfg.batch_size)
  valid = jnp.pad(mask[order.ravel()[:num]], (0, pad)).reshape(steps, cfg.batch_size)
  negs = sample_negatives(k_neg, items, mask, (steps, cfg.batch_size, cfg.num_negatives),
                          cfg.num_items)
  return items[order], negs, valid


def sparse_tables(model: models.ModelDef, cfg: LocalConfig, penalty=None):
  """Names of the tables that take sparse row steps (none without a row optimizer).

  Every plain or hashed table; low-rank factors (FedHM) stay dense. With
  sgd the user rows too (a row step there is the same math); with adam or
  adagrad the user tables (one row on a client) go to the dense optimizer.
  A penalty's gradient is dense (FedProx's reaches every row the client has
  moved): only sgd keeps its sparse step then, and the others step densely.
  """
  opt = row_optimizer(cfg)
  if opt is None or (penalty is not None and opt.name != "sgd"):
    return ()
  return tuple(n for n in model.tables
               if (model.module.item_rank is None or n in models.USER_TABLES)
               and (opt.name == "sgd" or n not in models.USER_TABLES))


def init_opt_state(model: models.ModelDef, optimizer: optax.GradientTransformation,
                   cfg: LocalConfig, params, penalty=None):
  """The local optimizer's state over the params it updates.

  With sgd row steps, the optimizer's state over the other params; with a
  row-sparse adam or adagrad, `(that state, {"count": int32, table: its
  row-optimizer state})`.
  """
  names = sparse_tables(model, cfg, penalty)
  dense = optimizer.init({k: v for k, v in params.items() if k not in names})
  opt = row_optimizer(cfg)
  if not names or opt.name == "sgd":
    return dense
  rows = {n: rowopt.init(opt, params[n]["embedding"]) for n in names}
  return dense, dict(rows, count=jnp.zeros((), jnp.int32))


def touched_bound(model: models.ModelDef, cfg: LocalConfig, num_slots):
  """Per table, at most how many units a client's local training touches.

  `num_slots` is the client's padded item count L: every epoch looks up
  ceil(L / B) * B * (1 + K) item rows, the whole of a plain table's row or
  `cols` elements of a hashed one.
  """
  steps = -(-num_slots // cfg.batch_size) * cfg.local_epochs
  lookups = steps * cfg.batch_size * (1 + cfg.num_negatives)
  return {n: lookups * (1 if s.size is None else s.cols) for n, s in model.tables.items()}


def finish(model: models.ModelDef, cfg: LocalConfig, params, opt_state, num_slots,
           penalty=None):
  """Ends local training: what the row optimizer still owes (Adam's catch-up) is applied.

  A no-op unless the tables take row-sparse Adam with `catch_up`; then
  every table equals what dense Adam would have made of it.
  """
  names = sparse_tables(model, cfg, penalty)
  opt = row_optimizer(cfg)
  if not names or opt.name != "adam" or not opt.catch_up:
    return params
  _, rows = opt_state
  bound = touched_bound(model, cfg, num_slots)
  params = dict(params)
  for n in names:
    w, _ = rowopt.flush(opt, params[n]["embedding"], rows[n], rows["count"], bound[n])
    params[n] = {"embedding": w}
  return params


def make_step(model: models.ModelDef, optimizer: optax.GradientTransformation,
              cfg: LocalConfig, penalty=None):
  """One local step on a minibatch: `step(params, opt_state, pos, negs, ok, seeds, anchor)`.

  `pos` [B], `negs` [B, K] and `ok` [B] are one row of `epoch_batches`.

  With `cfg.table_lr > 0` the embedding tables take sparse SGD steps: the
  gradient is taken with respect to the rows the batch looked up (Flax
  perturbations on each lookup) and scattered back through the lookup's
  transpose, so a step never builds or touches a whole table. `optimizer`
  then updates only the remaining (dense) params, and its state must come
  from `init_opt_state`. With `cfg.table_opt` (row-sparse Adam or Adagrad,
  `fairjax.rowopt`) the item tables take that optimizer's step on the rows
  (hashed: elements) the batch's valid examples looked up, the same way.

  `penalty(params, anchor)` (an algorithm's, e.g. FedProx's proximal term)
  is added to the objective; `anchor` is the params the client started its
  round from. Its gradient is taken whole: on a table that means an
  O(table) step, so a penalty on the tables gives up what the sparse row
  step saves (the penalty's own step is dense; the loss's stays sparse).

  Returns ((params, opt_state), (loss * live, live)); a batch of padding
  (no valid example) changes nothing.
  """
  loss_fn = models.get_loss(cfg.loss)
  specs = model.tables
  names = sparse_tables(model, cfg, penalty)
  row_opt = row_optimizer(cfg)

  def batch(pos, negs):
    # One apply over [positive, negatives] keeps the traced graph small.
    both = jnp.concatenate([pos[:, None], negs], axis=1)
    return jnp.zeros_like(both), both

  def dense_step(params, opt_state, pos, negs, ok, seeds=None, anchor=None):
    users, both = batch(pos, negs)
    valid = ok.astype(jnp.float32)

    def objective(params):
      logits = model.apply(params, users, both, seeds)
      loss = loss_fn(logits[:, 0], logits[:, 1:], valid)
      # The reported loss is the data's; the penalty only steers the step.
      return (loss + penalty(params, anchor) if penalty else loss), loss

    (_, loss), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, new_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    # A batch of padding must not move anything (Adam would, on zeros).
    live = ok.any()
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)
    return (keep(new_params, params), keep(new_state, opt_state)), (loss * live, live)

  def sparse_step(params, opt_state, pos, negs, ok, seeds=None, anchor=None):
    users, both = batch(pos, negs)
    valid = ok.astype(jnp.float32)
    tables = {n: params[n] for n in names}
    rest = {k: v for k, v in params.items() if k not in names}
    ids = {n: users if n in models.USER_TABLES else both for n in names}
    if row_opt.name != "sgd":
      dense_state, row_state = opt_state
      row_state = dict(row_state)
      units = {}
      for n in names:
        # The units (rows, or a hashed table's elements) the valid examples
        # look up; padding's lookups point past the table and are dropped.
        spec = specs[n] if not (seeds and n in seeds) else specs[n]._replace(seed=seeds[n])
        u, signs = subspace.lookup_units(spec, ids[n])
        u = jnp.where(ok.reshape(ok.shape + (1,) * (u.ndim - 1)), u,
                      tables[n]["embedding"].shape[0])
        units[n] = (u.reshape(-1), signs)
        # Catch-up Adam: the rows this step reads first take the steps they skipped.
        w, row_state[n] = rowopt.catch_up(row_opt, tables[n]["embedding"], row_state[n],
                                          units[n][0], row_state["count"])
        tables[n] = {"embedding": w}
    else:
      dense_state, row_state = opt_state, None
    # Every lookup gets a perturbation (Flax wants all or none); the rest's
    # gradient comes through the params, the tables' through these rows.
    looked = {n: users if n in models.USER_TABLES else both for n in specs
              if model.module.item_rank is None or n in models.USER_TABLES}
    zeros = {n: {"rows": jnp.zeros(looked[n].shape + (specs[n].cols,),
                                   params[n]["embedding"].dtype)} for n in looked}

    def objective(rest, rows):
      logits = model.module.apply({"params": {**rest, **tables}, "perturbations": rows},
                                  users, both, seeds)
      return loss_fn(logits[:, 0], logits[:, 1:], valid)

    loss, (g_rest, g_rows) = jax.value_and_grad(objective, argnums=(0, 1))(rest, zeros)
    live = ok.any()
    if penalty:
      # Zero on padding, like the loss's gradient, so a padding step moves nothing.
      g_pen = jax.grad(lambda p: penalty(p, anchor) * live)(params)
      g_rest = jax.tree.map(jnp.add, g_rest, {k: g_pen[k] for k in rest})
      tables = {n: {"embedding": tables[n]["embedding"] - cfg.table_lr
                    * g_pen[n]["embedding"]} for n in names}
    updates, new_dense = optimizer.update(g_rest, dense_state, rest)
    new_params = dict(optax.apply_updates(rest, updates))
    # A batch of padding must not move anything (Adam would, on zeros).
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)
    new_params, new_dense = keep((new_params, new_dense), (rest, dense_state))
    plain_segment = None
    if row_state is not None:
      count = row_state["count"] + live.astype(jnp.int32)
      row_state["count"] = count
    for n in names:
      spec = specs[n]
      if seeds and n in seeds:
        spec = spec._replace(seed=seeds[n])
      w, g = tables[n]["embedding"], g_rows[n]["rows"]
      if row_opt.name == "sgd":
        new_params[n] = {"embedding": subspace.lookup_add(w, spec, ids[n], -cfg.table_lr * g)}
        continue
      u, signs = units[n]
      g = (g if signs is None else signs.astype(g.dtype) * g).reshape((-1,) + w.shape[1:])
      if signs is None and n in models.ITEM_TABLES:  # plain item tables share their units
        segment = plain_segment = (rowopt.repeats(u) if plain_segment is None
                                   else plain_segment)
      else:
        segment = None
      w, row_state[n] = rowopt.update(row_opt, w, row_state[n], count, u, g, segment)
      new_params[n] = {"embedding": w}
    # Padding has a zero gradient, and an SGD step on zeros moves nothing.
    new_state = new_dense if row_state is None else (new_dense, row_state)
    return (new_params, new_state), (loss * live, live)

  return sparse_step if names else dense_step


def live_step_count(mask, cfg: LocalConfig):
  """Minibatches per epoch that hold some of the client's data (mask [..., L])."""
  return -(-mask.sum(-1) // cfg.batch_size)


def make_local_update(model: models.ModelDef, optimizer: optax.GradientTransformation,
                      cfg: LocalConfig, penalty=None):
  """Builds `update(shared, user, items, mask, rng, seeds, num_steps) -> (shared, user, loss)`.

  Args:
    model: the client's model (one user row; item tables at its level).
    optimizer: the local optimizer (its state is reset every round).
    cfg: static local-training settings.
    penalty: optional `(params, anchor) -> scalar` added to the local loss
      (see `make_step`).

  Returns:
    A pure function over one client, suitable for vmap:
      shared: the level's params without user tables.
      user: the client's user tables (rows of 1).
      items: int32 [L] its training items, padded; mask: bool [L].
      rng: PRNG key. seeds: None or dict table -> int seed (inconsistent).
      num_steps: None (the client's own step count) or a step count per
        epoch, at least the client's own, shared by a vmapped group.
    It returns the new shared params, the new user params and the mean
    training loss over its valid minibatches.
  """
  step = make_step(model, optimizer, cfg, penalty)

  def update(shared, user, items, mask, rng, seeds=None, num_steps=None):
    params = models.merge_user_params(user, shared)
    anchor = params if penalty else None
    opt_state = init_opt_state(model, optimizer, cfg, params, penalty)

    # Steps past the client's own data change nothing, so a while loop stops
    # there. Under vmap, pass `num_steps` unbatched (the group's longest
    # client's count): a batched trip count would make vmap select between
    # the old and new carry, the whole params, at every step.
    live_steps = live_step_count(mask, cfg) if num_steps is None else num_steps

    def epoch(carry, key):
      pos, negs, valid = epoch_batches(key, items, mask, cfg)

      def body(c):
        t, carry, loss_sum, live_sum = c
        carry, (loss, live) = step(*carry, pos[t], negs[t], valid[t], seeds, anchor)
        return t + 1, carry, loss_sum + loss, live_sum + live

      zero = jnp.zeros((), jnp.float32)
      _, carry, loss_sum, live_sum = jax.lax.while_loop(
          lambda c: c[0] < live_steps, body,
          (jnp.zeros((), jnp.int32), carry, zero, jnp.zeros((), jnp.int32)))
      return carry, (loss_sum, live_sum)

    (params, opt_state), (loss_sum, live_sum) = jax.lax.scan(
        epoch, (params, opt_state), epoch_keys(rng, cfg.local_epochs))
    params = finish(model, cfg, params, opt_state, mask.shape[-1], penalty)
    user_new, shared_new = models.split_user_params(params, model.module.kind)
    loss = loss_sum.sum() / jnp.maximum(live_sum.sum(), 1)
    return shared_new, user_new, loss

  return update
