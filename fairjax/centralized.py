"""Non-federated references: centralized NCF training and item popularity."""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fairjax import data as data_lib
from fairjax import models
from fairjax.errors import InputError


SCHEDULES = ("constant", "cosine")


def make_optimizer(name, lr, weight_decay=0.0, schedule="constant", total_steps=None):
  """An optax optimizer by name ("sgd", "adam", "adamw", "adagrad", "yogi").

  Args:
    name: optimizer name.
    lr: peak learning rate.
    weight_decay: L2 penalty added to the gradient (decoupled for adamw).
    schedule: "constant" or "cosine" (decays to 0 over total_steps).
    total_steps: length of the cosine schedule.
  """
  table = {"sgd": optax.sgd, "adam": optax.adam, "adagrad": optax.adagrad,
           "yogi": optax.yogi, "adamw": optax.adamw}
  if name not in table:
    raise InputError(f"optimizer: unknown optimizer {name!r}; choose one of "
                     f"{', '.join(table)}")
  if not lr > 0:
    raise InputError(f"learning rate must be positive, got {lr}")
  if schedule not in SCHEDULES:
    raise InputError(f"schedule: unknown schedule {schedule!r}; choose one of "
                     f"{', '.join(SCHEDULES)}")
  rate = lr
  if schedule == "cosine":
    rate = optax.cosine_decay_schedule(lr, max(1, int(total_steps)))
  if name == "adamw":
    return optax.adamw(rate, weight_decay=weight_decay)
  opt = table[name](rate)
  if weight_decay:
    opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3, 4))
def _train_chunk(model, opt, loss_name, params, opt_state, users, pos, negs, mask):
  """Runs len(users) steps (leading axis) of minibatch training in one scan."""
  loss_fn = models.get_loss(loss_name)

  def step(carry, batch):
    params, opt_state = carry
    u, p, n, m = batch

    def objective(params):
      both = jnp.concatenate([p[:, None], n], axis=1)
      logits = model.apply(params, jnp.broadcast_to(u[:, None], both.shape), both)
      return loss_fn(logits[:, 0], logits[:, 1:], m)

    loss, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                             (users, pos, negs, mask))
  return params, opt_state, losses.mean()


def model_from_config(config, num_users, num_items):
  return models.make_model(config.model, num_users, num_items, config.embed_dim,
                           tuple(config.mlp_layers))


@functools.partial(jax.jit, static_argnums=0)
def _score(model, params, users, items):
  return model.apply(params, jnp.broadcast_to(users[:, None], items.shape), items)


def score_fn_for(model, params):
  # One module-level jit keyed on the (hashable) model: a jit of the bound
  # method built here would retrace and recompile at every evaluation.
  return lambda users, items: _score(model, params, jnp.asarray(users), jnp.asarray(items))


def train_centralized(config, dataset, evaluate, log, progress):
  """Trains on all training interactions; evaluates every `eval.every` epochs.

  Args:
    config: the experiment ConfigDict (uses model, embed_dim, mlp_layers,
      train.*, eval.every, seed).
    dataset: a `fairjax.data.Dataset`.
    evaluate: Evaluator; called with a score function.
    log: callable(record dict) writing one metrics line.
    progress: callable(iterable, total, desc) -> iterable (a progress bar).

  Returns:
    (params, last metrics dict).
  """
  t = config.train
  if t.epochs < 1 or t.batch_size < 1 or t.num_negatives < 1:
    raise InputError("train: epochs, batch_size and num_negatives must be >= 1")
  model = model_from_config(config, dataset.num_users, dataset.num_items)
  steps_per_epoch = -(-len(dataset.train_users) // int(t.batch_size))
  opt = make_optimizer(t.optimizer, t.lr, t.weight_decay, t.schedule,
                       steps_per_epoch * int(t.epochs))
  models.get_loss(t.loss)
  params = jax.jit(model.init)(jax.random.PRNGKey(config.seed))
  opt_state = opt.init(params)
  rng = np.random.default_rng(config.seed)
  n = len(dataset.train_users)
  bs = int(t.batch_size)
  steps = -(-n // bs)
  chunk = max(1, min(steps, int(t.steps_per_call)))
  padded_steps = -(-steps // chunk) * chunk
  last = {}
  for epoch in progress(range(1, t.epochs + 1), t.epochs, "epochs"):
    start = time.time()
    perm = rng.permutation(n)
    users = dataset.train_users[perm]
    pos = dataset.train_items[perm]
    negs = data_lib.sample_negatives(dataset.train_users, dataset.train_items,
                                     dataset.num_items, users, t.num_negatives, rng)
    total = padded_steps * bs
    mask = np.zeros(total, np.float32)
    mask[:n] = 1.0
    pad = lambda a: np.concatenate([a, np.zeros((total - n,) + a.shape[1:], a.dtype)])
    users, pos, negs = pad(users), pad(pos), pad(negs)
    shape = (padded_steps // chunk, chunk, bs)
    users, pos, mask = (a.reshape(shape) for a in (users, pos, mask))
    negs = negs.reshape(shape + (t.num_negatives,))
    losses = []
    for c in range(shape[0]):
      params, opt_state, loss = _train_chunk(model, opt, t.loss, params, opt_state,
                                             users[c], pos[c], negs[c], mask[c])
      losses.append(loss)
    train_loss = float(np.mean(jax.device_get(losses)))
    record = {"round": epoch, "epoch": epoch, "train_loss": train_loss,
              "time/epoch_seconds": time.time() - start}
    if epoch % config.eval.every == 0 or epoch == t.epochs:
      record.update(evaluate(score_fn_for(model, params)))
      record["time/eval_end"] = time.time()
      last = record
      log(record)
  return params, last


def popularity(config, dataset, evaluate, log):
  """Ranks items by their number of training interactions (a floor)."""
  counts = np.bincount(dataset.train_items, minlength=dataset.num_items).astype(np.float32)
  # A tiny deterministic jitter keeps equally popular items from tying.
  counts += np.random.default_rng(config.seed).uniform(0, 1e-3, counts.shape).astype(np.float32)

  def score(users, items):
    return counts[np.asarray(items)]
  record = {"round": 0}
  record.update(evaluate(score))
  log(record)
  return record
