"""A heterogeneous federated run: plan, state, rounds, evaluation, the run loop.

`Simulation` puts the pieces together: the algorithm value
(`fairjax.algorithms`), the client sampler (`fairjax.sampling`), the round
engine (`fairjax.engine`), scoring (`fairjax.scoring`) and byte accounting
(`fairjax.accounting`). `run` is the loop `launch.train` runs: rounds,
evaluations, metrics.jsonl and checkpoints. Randomness of round r comes from
(seed, r) alone, so a run resumed from a checkpoint replays exactly what an
uninterrupted run does.
"""
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import accounting
from fairjax import algorithms
from fairjax import capacity
from fairjax import checkpoint
from fairjax import client as client_lib
from fairjax import compilation
from fairjax import data as data_lib
from fairjax import engine as engine_lib
from fairjax import evaluation
from fairjax import metrics
from fairjax import models
from fairjax import rowopt
from fairjax import sampling
from fairjax import scoring
from fairjax import server as server_lib
from fairjax import sharding
from fairjax import validation
from fairjax.centralized import make_optimizer
from fairjax.sampling import apportion


def server_optimizer(cfg):
  """The server optimizer of `cfg` (config.server), with its `eps` if set.

  `eps` is the adaptivity tau of FedAdam / FedYogi (Reddi et al., 2021):
  coordinates whose averaged update stays far below it move by less than
  `lr` a round, where optax's default 1e-8 normalises even a faint but
  steady update (such as hash-collision noise) to a full step.
  """
  eps = float(cfg.get("eps", 0.0))
  return make_optimizer(cfg.optimizer, cfg.lr, eps=eps or None)


def prior_knots(config, dataset):
  """The popularity prior's initial knots of `config` on `dataset` (() when off)."""
  if config.get("item_prior", "none") != "popularity":
    return ()
  return models.popularity_prior(dataset.train_items, dataset.num_items,
                                 int(config.get("item_prior_knots", 32)),
                                 int(config.client.num_negatives))


def served_popularity(config, dataset):
  """The popularity scores devices an algorithm excludes are served."""
  return scoring.popularity_scores(dataset.train_items, dataset.num_items, config.seed)


def build_model(config, num_items, num_users=1, item_sizes=None, seeds=None, **kwargs):
  """The model `config` describes (`config.model`, embed_dim, mlp_layers).

  Args:
    config: the experiment ConfigDict.
    num_items: items of the dataset (rows of the full item tables).
    num_users: rows of its user tables (1: one client's own row).
    item_sizes, seeds: hashed item tables (see `models.make_model`).
    **kwargs: passed on to `models.make_model`.

  Returns:
    A flax module.
  """
  return models.make_model(config.model, num_users, num_items, config.embed_dim,
                           tuple(config.mlp_layers), item_sizes, seeds, **kwargs)


def context(config, dataset, prior=None):
  """The `algorithms.Context` a run of `config` on `dataset` builds its algorithm on.

  With it a notebook builds any algorithm by hand, e.g.
  `algorithms.hashed.fair(context(config, dataset))`, and runs it with
  `Simulation(config, dataset, algorithm=...)`. `prior` overrides the
  popularity prior's knots (default `prior_knots(config, dataset)`).
  """
  validation.validate(config)
  levels = capacity.parse_capacities(config.capacities)
  shapes = {p: (dataset.num_items, int(config.embed_dim))
            for p in models.item_table_paths(config.model)}
  return algorithms.Context(levels, shapes, config.fair.hash_seed,
                            bool(config.fair.exact_sizes),
                            functools.partial(
                                build_model, config, dataset.num_items,
                                prior=prior_knots(config, dataset) if prior is None else prior,
                                layout=config.fair.get("layout", "hash")),
                            dataset.num_users, config.fair)


class Simulation:
  """The state-free parts of a federated run: plan, models, programs.

  Args:
    config: the experiment ConfigDict.
    dataset: a `fairjax.data.Dataset`.
    algorithm: what runs: None (the one `config.algorithm` names), a name
      such as "fedprox:mu=0.1", an `algorithms.Algorithm` value built on
      `context(config, dataset)`, or a function `ctx -> Algorithm`.
    prior: the popularity prior's initial knots; default `prior_knots`
      of the dataset (a deployment passes the real data's to its stand-in).
    popularity: the scores served to excluded devices; default
      `served_popularity(config, dataset)`.
  """

  def __init__(self, config, dataset, algorithm=None, prior=None, popularity=None):
    validation.validate(config)
    self.config = config
    self.dataset = dataset
    c = config.client
    self.levels = capacity.parse_capacities(config.capacities)
    self.user_level = capacity.assign_levels(dataset.num_users, self.levels, config.seed)
    self.kind = config.model
    # The popularity prior's initial knots (models.popularity_prior), or ().
    self.prior = prior_knots(config, dataset) if prior is None else tuple(prior)
    # The context builds every model of the run (prior and layout included).
    self.context = context(config, dataset, self.prior)
    self.full_model = self._model(1)
    self.shapes = self.context.shapes
    self.table_names = [p[0] for p in self.shapes]
    if algorithm is None or isinstance(algorithm, str):
      self.algorithm = algorithms.make(algorithm or config.algorithm, self.context)
    elif isinstance(algorithm, algorithms.Algorithm):
      self.algorithm = algorithm
    elif callable(algorithm):
      self.algorithm = algorithm(self.context)
    else:
      raise TypeError(f"algorithm: a name, an algorithms.Algorithm or a function of a "
                      f"Context, got {type(algorithm).__name__}")
    if len(self.algorithm.levels) != len(self.levels.compressions):
      raise ValueError(f"algorithm: it has {len(self.algorithm.levels)} levels, the config's "
                       f"capacities {len(self.levels.compressions)}; build it on "
                       "simulate.context(config, dataset)")
    self.local_opt = make_optimizer(c.optimizer, c.lr)
    self.server_opt = server_optimizer(config.server)
    # Row-sparse table steps (client.sparse_update): sgd as lookup_add,
    # adam and adagrad through fairjax.rowopt; other optimizers step densely.
    sparse = bool(c.get("sparse_update", True)) and c.optimizer in rowopt.NAMES
    table_opt = None
    if sparse and c.optimizer != "sgd":
      table_opt = rowopt.make(c.optimizer, float(c.lr), bool(c.get("catch_up", False)))
    self.local_cfg = client_lib.LocalConfig(c.loss, dataset.num_items, int(c.num_negatives),
                                            int(c.batch_size), int(config.local_epochs),
                                            float(c.lr) if sparse and c.optimizer == "sgd"
                                            else 0.0, table_opt)
    self.screen = server_lib.Screen(float(config.server.max_update_norm),
                                    float(config.server.clip_norm))
    self.indptr, self.items = data_lib.train_csr(dataset)
    counts = np.diff(self.indptr)
    self.level_users = [np.flatnonzero((self.user_level == lv) & (counts > 0))
                        for lv in range(len(self.levels.compressions))]
    caps = np.array([len(u) if level.trains else 0
                     for u, level in zip(self.level_users, self.algorithm.levels)])
    # p_k ∝ examples_k * c_k^-level_weight (0: examples only, the design's p_k).
    alpha = float(config.fair.get("level_weight", 0.0))
    level_scale = [float(x) ** -alpha for x in self.levels.compressions]
    self.per_level = apportion(int(config.clients_per_round), self.levels.fractions, caps)
    bs = int(c.batch_size)
    level_len = []
    for users in self.level_users:
      longest = int(counts[users].max()) if len(users) else 1
      level_len.append(-(-min(int(c.max_items), longest) // bs) * bs)
    self.sample = sampling.Sampler(config.seed, self.indptr, self.items, self.level_users,
                                   self.per_level, level_len, level_scale, c.dropout,
                                   self.algorithm.client_seeds, c.poison)
    # fair.federate_user: the server stores every user row and a client
    # downloads its own and uploads it trained. Rows are never averaged
    # across users (that was a flaw of the paper's code), so the training
    # math is that of a private row; what changes is the traffic.
    self.federate_user = bool(config.fair.get("federate_user", False))
    # Every level's clients are split over these devices (config.num_devices).
    self.mesh = sharding.make_mesh(int(config.num_devices))
    self.engine = engine_lib.Engine(
        self.algorithm, self.local_opt, self.local_cfg, self.server_opt, self.screen,
        self.mesh, [self.group_size(lv) for lv in range(len(self.per_level))],
        self.table_names)
    self.scorer = scoring.Scorer(
        self.algorithm, self.table_names,
        served_popularity(config, dataset) if popularity is None else popularity)

  def _model(self, num_users, item_sizes=None, seeds=None, **kwargs):
    return self.context.build_model(num_users, item_sizes, seeds, **kwargs)

  def client_seeds(self, users, rnd=0):
    """Each client's table seeds [K, tables] in round rnd."""
    return self.algorithm.client_seeds(np.asarray(users), rnd)

  def group_size(self, lv):
    """Clients of level lv that run as one vmapped group (fair.execution, chunk_size)."""
    k = int(self.per_level[lv])
    size = k if self.config.fair.execution == "vmap" else 1
    if self.config.fair.chunk_size > 0:
      size = min(size, int(self.config.fair.chunk_size))
    return size

  # ---------------------------------------------------------------- state

  def init_state(self):
    """Server params (full tables), server optimizer state, all user tables."""
    # Jitted: flax's eager init would compile every primitive on its own.
    if not hasattr(self, "_init_state"):
      self._init_state = jax.jit(self._build_state)
    return sharding.replicate(self._init_state(), self.mesh)

  def _build_state(self):
    key = jax.random.PRNGKey(self.config.seed)
    k_server, k_users = jax.random.split(key)
    _, rest = models.split_user_params(self.full_model.init(k_server), self.kind)
    users, _ = models.split_user_params(self._model(self.dataset.num_users).init(k_users),
                                        self.kind)
    users = {name: leaf["embedding"] for name, leaf in users.items()}
    # Counters since the last evaluation live in the state, so a resumed run
    # reports exactly what an uninterrupted one does.
    acc = {"dropped": jnp.zeros((), jnp.int32), "rejected": jnp.zeros((), jnp.int32),
           "loss_sum": jnp.zeros((), jnp.float32), "loss_rounds": jnp.zeros((), jnp.int32)}
    return {"params": rest, "opt_state": self.server_opt.init(rest), "users": users,
            "round": jnp.zeros((), jnp.int32), "acc": acc,
            "answered_rounds": jnp.zeros((), jnp.int32)}

  @staticmethod
  def reset_acc(state):
    zero = jax.tree.map(jnp.zeros_like, state["acc"])
    return dict(state, acc=zero)

  # --------------------------------------------------------------- rounds

  def round(self, state, rnd):
    """Runs round `rnd` (1-based); returns (state, round statistics)."""
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), rnd)
    params, opt_state, users, levels, weight = self.engine.round(
        state["params"], state["opt_state"], state["users"], self.sample(rnd), rnd, key)
    stats = {"dropped_clients": 0, "rejected_updates": 0, "clients": 0,
             "bytes_down": 0, "bytes_up": 0}
    losses = []
    for lv, out in enumerate(levels):
      if out is None:
        continue
      batch, ok, loss = out
      answered = batch.weights > 0
      stats["clients"] += len(batch.users)
      stats["dropped_clients"] += int((~answered).sum())
      stats["rejected_updates"] += int((answered & ~ok).sum())
      sizes = self.level_bytes(lv)
      # A federated user row travels with the shared params, both ways.
      level_bytes = sizes["shared"] + (sizes["user"] if self.federate_user else 0)
      stats["bytes_down"] += len(batch.users) * level_bytes
      stats["bytes_up"] += int(answered.sum()) * level_bytes
      good = answered & ok & np.isfinite(loss)
      losses.extend(loss[good].tolist())
    stats["train_loss"] = float(np.mean(losses)) if losses else float("nan")
    stats["answered_weight"] = float(weight)
    acc = state["acc"]
    has_loss = bool(losses)
    acc = {"dropped": acc["dropped"] + stats["dropped_clients"],
           "rejected": acc["rejected"] + stats["rejected_updates"],
           "loss_sum": acc["loss_sum"] + np.float32(stats["train_loss"] if has_loss else 0.0),
           "loss_rounds": acc["loss_rounds"] + int(has_loss)}
    return {"params": params, "opt_state": opt_state, "users": users,
            "round": jnp.asarray(rnd, jnp.int32), "acc": acc,
            "answered_rounds": state["answered_rounds"] + int(weight > 0)}, stats

  # ------------------------------------------------- accounting, scoring

  @functools.lru_cache(maxsize=None)
  def level_bytes(self, lv):
    """Bytes a client of level lv holds (see `accounting.level_bytes`), cached."""
    shapes = jax.eval_shape(self._build_state)["params"]
    return accounting.level_bytes(self.algorithm.levels[lv], shapes, self.algorithm.seeds(0),
                                  self.kind)

  def score_fns(self, state, excluded="popularity"):
    """One scoring function per level: its model, the users' own embeddings.

    Users of a level the algorithm excludes get the popularity ranking
    (`excluded="popularity"`) or the global model (`"global"`); see
    `fairjax.scoring`.
    """
    # Score on one device, not on every one of the mesh.
    return self.scorer.score_fns(sharding.local(state), excluded)

  def evaluate(self, state, evaluator=None):
    """Metrics of the model in `state`, overall and per level ("level/8x/hr@10").

    Args:
      state: a state of this simulation (`init_state`, `round`), or any dict
        with "params" (the server's params, e.g. edited by hand) and "users"
        (every user's rows); "round" (default 0) picks the hash seeds of
        algorithms that change them per round.
      evaluator: an `evaluation.Evaluator`; default one for `config.eval`
        (built once and kept).

    Returns:
      dict metric -> float, as a metrics.jsonl line has them. A device its
      algorithm excludes is served popularity; then the `global_view/` keys
      score it with the global model instead (fairjax.scoring).
    """
    if evaluator is None:
      if getattr(self, "_evaluator", None) is None:
        ev = self.config.eval
        self._evaluator = evaluation.Evaluator(self.dataset, ev.protocol,
                                               int(ev.num_negatives), seed=self.config.seed)
      evaluator = self._evaluator
    state = dict(state)
    state.setdefault("round", 0)
    names = self.levels.names
    out = evaluator(self.score_fns(state), self.user_level, names)
    if self.scorer.excludes:  # devices left out are served popularity; the old view too
      old = evaluator(self.score_fns(state, "global"), self.user_level, names)
      out.update({f"global_view/{k}": v for k, v in old.items()})
    return out


def run(config, dataset, evaluate, workdir, progress):
  """Runs the federated experiment; resumes from WORKDIR/checkpoints/."""
  setup_start = time.time()
  tally = compilation.Tally()
  cache = compilation.cache_dir()
  metrics.say("compiling: the first round builds the training programs and the first "
              "evaluation the scoring ones (" + (f"compilation cache: {cache}" if cache
                                                 else "no compilation cache") + ")")
  sim = Simulation(config, dataset)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  # The config is stored with each checkpoint: a rerun with other settings is refused.
  meta = checkpoint.config_meta(config)
  last, state = checkpoint.restore_latest(ckpt_dir, sim.init_state(), meta)
  # Several processes resume from what process 0 found; it alone writes files.
  last, state = sharding.from_lead(last, state)
  lead = sharding.is_lead()
  state = sharding.replicate(jax.tree.map(jnp.asarray, state), sim.mesh)
  start_round = int(state["round"])
  if last is not None:
    print(f"resuming from round {start_round} ({ckpt_dir})", file=sys.stderr)
  writer = metrics.MetricsWriter(workdir, resume_round=start_round if last is not None
                                 else None, finished=start_round >= int(config.rounds)
                                 ) if lead else None
  names = sim.levels.names
  static = {}
  for lv, name in enumerate(names):
    b = sim.level_bytes(lv)
    static[f"client_param_bytes/{name}"] = b["params"]
    static[f"client_table_bytes/{name}"] = b["tables"]
    static[f"clients_per_round/{name}"] = int(sim.per_level[lv])
  excluded = sum(len(u) for u, level in zip(sim.level_users, sim.algorithm.levels)
                 if not level.trains)
  static["excluded_clients"] = int(excluded)
  rounds = int(config.rounds)
  every = int(config.eval.every)
  ckpt_every = int(config.checkpoint_every)
  final = None
  bar = progress(range(start_round + 1, rounds + 1), rounds, "rounds", initial=start_round)
  round_start = time.time()
  last_eval = start_round
  for rnd in bar:
    state, stats = sim.round(state, rnd)
    if rnd == start_round + 1:
      jax.block_until_ready(state["params"])
      metrics.say(f"round {rnd} done {time.time() - setup_start:.1f}s after the start "
                  f"(setup included): {tally.summary()}")
    checkpoint.crash_point("round", rnd)  # test hook: a kill mid-training
    is_last = rnd == rounds
    if rnd % every == 0 or is_last:
      acc = jax.device_get(state["acc"])
      n_loss = int(acc["loss_rounds"])
      record = {"round": rnd, "algorithm": config.algorithm,
                "train_loss": float(acc["loss_sum"]) / n_loss if n_loss else None,
                "bytes_down": stats["bytes_down"], "bytes_up": stats["bytes_up"],
                "dropped_clients": int(acc["dropped"]),
                "rejected_updates": int(acc["rejected"]),
                "time/round_seconds": (time.time() - round_start) / max(1, rnd - last_eval)}
      record.update(static)
      t0 = time.time()
      first_eval = final is None
      if first_eval:
        tally.reset()
      record.update(sim.evaluate(state, evaluate))
      record["time/eval_seconds"] = time.time() - t0
      if first_eval:
        metrics.say(f"evaluation at round {rnd} took {record['time/eval_seconds']:.1f}s, "
                    f"{tally.summary()}")
      if is_last:
        record["final"] = True
        if int(state["answered_rounds"]) == 0:
          record["note"] = "no client ever answered: this is the initial model"
      if writer:
        writer.write(record)
      final = record
      metrics.show_progress(bar, f"round {rnd}/{rounds}", record,
                            list(evaluate.names) + ["train_loss"])
      state = Simulation.reset_acc(state)
      last_eval = rnd
      round_start = time.time()
    if (rnd % ckpt_every == 0 or is_last) and lead:
      checkpoint.save(ckpt_dir, rnd, state, meta=meta)
  if final is None:  # resumed after the last round: report the stored result
    records = metrics.read_metrics(workdir) if lead else []
    final = records[-1] if records else {}
  return final
