"""Non-federated references: centralized NCF training and item popularity."""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fairjax import data as data_lib
from fairjax import metrics
from fairjax import models
from fairjax import scoring
from fairjax import subspace
from fairjax.errors import InputError


SCHEDULES = ("constant", "cosine")


def make_optimizer(name, lr, weight_decay=0.0, schedule="constant", total_steps=None,
                   eps=None):
  """An optax optimizer by name ("sgd", "adam", "adamw", "adagrad", "yogi").

  Args:
    name: optimizer name.
    lr: peak learning rate.
    weight_decay: L2 penalty added to the gradient (decoupled for adamw).
    schedule: "constant" or "cosine" (decays to 0 over total_steps).
    total_steps: length of the cosine schedule.
    eps: the adaptive optimizers' epsilon (None = optax's default; sgd has none).
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
  kw = {} if eps is None or name == "sgd" else {"eps": eps}
  if name == "adamw":
    return optax.adamw(rate, weight_decay=weight_decay, **kw)
  opt = table[name](rate, **kw)
  if weight_decay:
    opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3), donate_argnums=(4, 5))
def _train_chunk(model, opt, loss_name, embed_l2, params, opt_state, users, pos, negs, mask):
  """Runs len(users) steps (leading axis) of minibatch training in one scan.

  `embed_l2` > 0 adds embed_l2 * (sum of squares of the embedding rows the
  batch looks up) / (unmasked positives): L2 on the batch's rows only, as
  NCF implementations regularise, rather than decay of whole tables.
  """
  loss_fn = models.get_loss(loss_name)
  tables = model.tables

  def step(carry, batch):
    params, opt_state = carry
    u, p, n, m = batch

    def objective(params):
      both = jnp.concatenate([p[:, None], n], axis=1)
      logits = model.apply(params, jnp.broadcast_to(u[:, None], both.shape), both)
      loss = loss_fn(logits[:, 0], logits[:, 1:], m)
      if embed_l2:
        penalty = 0.0
        for name, spec in tables.items():
          ids = u if name in models.USER_TABLES else both
          rows = subspace.lookup(params[name]["embedding"], spec, ids)
          sq = jnp.sum(rows * rows, axis=-1)
          if sq.ndim > 1:
            sq = sq.sum(-1)
          penalty += (sq * m).sum()
        loss += embed_l2 * penalty / jnp.maximum(m.sum(), 1.0)
      return loss

    loss, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                             (users, pos, negs, mask))
  return params, opt_state, losses.mean()


def model_from_config(config, num_users, num_items, kind=None):
  """The centralized model: `config.model` (or `kind`) with the train.* overrides.

  `train.mlp_embed_dim` and `train.mlp_layers`, when set, replace the width
  of the MLP tables and the MLP tower; federated runs never read them.
  """
  t = config.train
  layers = tuple(t.mlp_layers) if len(t.mlp_layers) else tuple(config.mlp_layers)
  mlp_dim = int(t.mlp_embed_dim) or None
  return models.make_model(kind or config.model, num_users, num_items, config.embed_dim,
                           layers, mlp_dim=mlp_dim)


@functools.partial(jax.jit, static_argnums=0)
def _score(model, params, users, items):
  return model.apply(params, jnp.broadcast_to(users[:, None], items.shape), items)


def score_fn_for(model, params):
  # One module-level jit keyed on the (hashable) model: a jit of the bound
  # method built here would retrace and recompile at every evaluation.
  return lambda users, items: _score(model, params, jnp.asarray(users), jnp.asarray(items))


def _validate_train(config):
  t = config.train
  if t.epochs < 1 or t.batch_size < 1 or t.num_negatives < 1:
    raise InputError("train: epochs, batch_size and num_negatives must be >= 1")
  for key in ("pretrain_gmf_epochs", "pretrain_mlp_epochs"):
    if int(t[key]) < 0:
      raise InputError(f"train.{key}: must be >= 0 (0 = no pre-training), got {t[key]}")
  if config.model == "neumf" and bool(int(t.pretrain_gmf_epochs)) != bool(
      int(t.pretrain_mlp_epochs)):
    raise InputError("train.pretrain_gmf_epochs, train.pretrain_mlp_epochs: pre-training "
                     "needs both (or neither) to be > 0")
  if not 0.0 <= float(t.pretrain_alpha) <= 1.0:
    raise InputError(f"train.pretrain_alpha: must be in [0, 1], got {t.pretrain_alpha}")
  if int(t.mlp_embed_dim) < 0:
    raise InputError(f"train.mlp_embed_dim: must be >= 0 (0 = embed_dim), got "
                     f"{t.mlp_embed_dim}")
  if not float(t.embed_l2) >= 0.0:
    raise InputError(f"train.embed_l2: must be >= 0, got {t.embed_l2}")
  if float(t.finetune_lr) < 0:
    raise InputError(f"train.finetune_lr: must be >= 0 (0 = train.lr), got {t.finetune_lr}")
  try:  # before pre-training spends minutes, not after
    make_optimizer(t.finetune_optimizer or t.optimizer, t.finetune_lr or t.lr)
  except InputError as e:
    raise InputError(f"train.{'finetune_' if t.finetune_optimizer else ''}{e}") from None
  models.get_loss(t.loss)


def _fit(config, dataset, model, params, opt, epochs, rng, evaluate, log, progress,
         phase, first_round):
  """Trains `params` of `model` for `epochs` epochs; returns (params, last record).

  Evaluates every `eval.every` epochs and after the last; records carry
  `phase` (the model being trained), `epoch` (within the phase) and `round`
  (epochs since the start of the run, pre-training included).
  """
  t = config.train
  opt_state = opt.init(params)
  n = len(dataset.train_users)
  bs = int(t.batch_size)
  steps = -(-n // bs)
  chunk = max(1, min(steps, int(t.steps_per_call)))
  padded_steps = -(-steps // chunk) * chunk
  last = {}
  bar = progress(range(1, epochs + 1), epochs, f"{phase} epochs")
  for epoch in bar:
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
      params, opt_state, loss = _train_chunk(model, opt, t.loss, float(t.embed_l2), params,
                                             opt_state, users[c], pos[c], negs[c], mask[c])
      losses.append(loss)
    train_loss = float(np.mean(jax.device_get(losses)))
    record = {"round": first_round + epoch, "epoch": epoch, "phase": phase,
              "train_loss": train_loss, "time/epoch_seconds": time.time() - start}
    if epoch % config.eval.every == 0 or epoch == epochs:
      record.update(evaluate(score_fn_for(model, params)))
      record["time/eval_end"] = time.time()
      last = record
      log(record)
      metrics.show_progress(bar, f"{phase} epoch {epoch}/{epochs}", record,
                            list(evaluate.names) + ["train_loss"])
  return params, last


def train_centralized(config, dataset, evaluate, log, progress):
  """Trains on all training interactions; evaluates every `eval.every` epochs.

  NeuMF with `train.pretrain_gmf_epochs` and `train.pretrain_mlp_epochs`
  > 0 is pre-trained as in the NCF paper: it first trains GMF, then MLP, for
  those many epochs (`train.optimizer`, `train.lr`), builds NeuMF from them
  (`models.neumf_from_pretrained`, `train.pretrain_alpha`) and trains that
  for `train.epochs` with `train.finetune_optimizer` and `train.finetune_lr`
  (empty / 0 = the pre-training ones). GMF and MLP runs ignore these keys.

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
  _validate_train(config)
  t = config.train
  steps_per_epoch = -(-len(dataset.train_users) // int(t.batch_size))
  rng = np.random.default_rng(config.seed)
  key = jax.random.PRNGKey(config.seed)
  model = model_from_config(config, dataset.num_users, dataset.num_items)
  pre = {"gmf": int(t.pretrain_gmf_epochs), "mlp": int(t.pretrain_mlp_epochs)}
  if config.model != "neumf" or not all(pre.values()):
    pre = {"gmf": 0, "mlp": 0}
  fit = functools.partial(_fit, config, dataset, rng=rng, evaluate=evaluate, log=log,
                          progress=progress)
  if pre["gmf"]:
    trained = {}
    for i, kind in enumerate(("gmf", "mlp")):
      sub = model_from_config(config, dataset.num_users, dataset.num_items, kind)
      opt = make_optimizer(t.optimizer, t.lr, t.weight_decay, t.schedule,
                           steps_per_epoch * pre[kind])
      init = jax.jit(sub.init)(jax.random.fold_in(key, i + 1))
      trained[kind], _ = fit(sub, init, opt, pre[kind], phase=kind,
                             first_round=pre["gmf"] if kind == "mlp" else 0)
    params = models.neumf_from_pretrained(trained["gmf"], trained["mlp"],
                                          float(t.pretrain_alpha))
    opt = make_optimizer(t.finetune_optimizer or t.optimizer, t.finetune_lr or t.lr,
                         t.weight_decay, t.schedule, steps_per_epoch * int(t.epochs))
  else:
    params = jax.jit(model.init)(key)
    opt = make_optimizer(t.optimizer, t.lr, t.weight_decay, t.schedule,
                         steps_per_epoch * int(t.epochs))
  return fit(model, params, opt, int(t.epochs), phase=config.model,
             first_round=pre["gmf"] + pre["mlp"])


def popularity(config, dataset, evaluate, log):
  """Ranks items by their number of training interactions (a floor).

  Besides the overall figures it reports `level/<c>x/<metric>`: popularity
  on the users a federated run with the same `capacities` and `seed` puts
  at each level, the comparator of each level's figures there.
  """
  from fairjax import capacity  # pylint: disable=g-import-not-at-top
  # A tiny deterministic jitter keeps equally popular items from tying.
  counts = scoring.popularity_scores(dataset.train_items, dataset.num_items, config.seed)
  levels = capacity.parse_capacities(config.capacities)
  user_level = capacity.assign_levels(dataset.num_users, levels, config.seed)
  fns = [scoring.popularity_fn(counts)] * len(levels.compressions)
  record = {"round": 0}
  record.update(evaluate(fns, user_level, levels.names))
  log(record)
  return record
