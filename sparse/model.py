"""A Keras-like model whose output layer is trained on an LSH-sampled subset.

    model = Model([Dense(256), Output(n_classes)], input_dim=100_000)
    history = model.fit(x, y, epochs=5, batch_size=256)
    model.evaluate(x_test, y_test)            # {"p@1": ...}
    model.predict(x_test, top_k=5, mode="lsh")   # fast path
    model.save("m.npz"); model = Model.load("m.npz")

`x` is sparse feature ids (see `sparse.data.as_inputs`): the first `Dense`
layer is an embedding bag whose touched rows alone get (lazy) Adam updates.
`Output(n, sparsity=...)` is a softmax over an active set chosen by LSH
(`sparse.active_set`); `sparsity=1.0` gives the ordinary dense softmax
layer. `Dense(units, sparsity<1)` after the first layer is a sampled hidden
layer. Inference scores every neuron (`mode="dense"`) or only the
candidates an LSH index retrieves (`mode="lsh"`, `sparse.retrieval`).
"""
import dataclasses
import json
import math
import time
from typing import Callable, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sparse import active_set as active_lib
from sparse import autotune
from sparse import data as data_lib
from sparse import layers
from sparse import network
from sparse import retrieval
from sparse import tables as tables_lib
from sparse.errors import InputError
from sparse.layer_lsh import LayerLSH
from sparse.specs import Dense, Output, tuning

__all__ = ["Dense", "Output", "Model", "sampling_offsets"]
sampling_offsets = active_lib.sampling_offsets
_CALIBRATION_EXAMPLES = 512


class Model:
  """Layers declared in a list; `fit`, `evaluate`, `predict`, `save`/`load`."""

  def __init__(self, layer_specs: List, input_dim: int, learning_rate=1e-3,
               seed: int = 0):
    if not layer_specs or not isinstance(layer_specs[-1], Output):
      raise InputError("layers: the last layer must be an Output")
    if len(layer_specs) < 2 or not isinstance(layer_specs[0], Dense):
      raise InputError("layers: give at least one Dense layer before Output")
    if layer_specs[0].sparsity != 1.0:
      raise InputError("layers: the first Dense layer reads the sparse inputs "
                       "and cannot be sampled")
    if any(not isinstance(s, Dense) for s in layer_specs[:-1]):
      raise InputError("layers: only Dense layers may precede Output")
    for s in layer_specs[:-1]:
      if s.activation not in layers.ACTIVATIONS:
        raise InputError(f"layers: unknown activation {s.activation!r}")
    out = layer_specs[-1]
    if out.active_set not in active_lib.MODES:
      raise InputError(f"active_set: {out.active_set!r} is not 'shared' or "
                       "'per_example'")
    self.specs = list(layer_specs)
    self.input_dim = int(input_dim)
    self.adam = layers.AdamConfig(learning_rate=float(learning_rate))
    self.seed = int(seed)
    self.out_tuning = tuning(out.units, out)
    self.active = active_lib.for_output(out, self.out_tuning)
    self.dense_output = not self.active.sampled
    self._catch_up = bool(out.adam_catch_up) and self.active.sampled
    self.state = self._init_state(jax.random.key(seed))
    self._hidden_lsh = {}
    for i, s in enumerate(self.specs[1:-1], start=1):
      if s.sparsity < 1.0:
        self._hidden_lsh[i] = LayerLSH("dwta", self.specs[i - 1].units,
                                       tuning(s.units, s), seed + 100 * i)
    self._out_lsh = None
    if self.active.sampled:
      self._out_lsh = LayerLSH(out.hash, self.specs[-2].units,
                               self.out_tuning, seed + 7)
    self._perm = np.random.default_rng(seed).permutation(
        out.units).astype(np.int32)
    self._rng = np.random.default_rng(seed + 1)
    self.inference = retrieval.InferenceConfig()
    self._index = None         # LSH inference index, built on first use
    self._budget = None        # its calibrated candidate budget
    self._compile()
    self._tables_ready = False
    self._pending = False   # output rows owe a catch-up (see `flush`)

  # ---------------------------------------------------------------- state
  def _init_state(self, key):
    keys = jax.random.split(key, len(self.specs))
    dims = [self.input_dim] + [s.units for s in self.specs]
    params = {}
    w0 = jax.random.normal(keys[0], (self.input_dim, dims[1])) * math.sqrt(
        1.0 / 32)
    params["in"] = {"w": w0, "b": jnp.zeros(dims[1])}
    params["hidden"] = []
    for i in range(1, len(self.specs) - 1):
      std = math.sqrt(2.0 / dims[i])
      params["hidden"].append({
          "w": jax.random.normal(keys[i], (dims[i + 1], dims[i])) * std,
          "b": jnp.zeros(dims[i + 1])})
    n, d = self.specs[-1].units, dims[-2]
    params["out"] = {"w": jax.random.normal(keys[-1], (n, d)) *
                          math.sqrt(1.0 / d), "b": jnp.zeros(n)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = {"params": params, "m": zeros,
             "v": jax.tree.map(jnp.zeros_like, params),
             "count": jnp.zeros((), jnp.int32)}
    if self._catch_up:
      state["last"] = jnp.zeros((n,), jnp.int32)
    return state

  def _compile(self):
    specs = self.specs
    self._step = jax.jit(network.make_step(specs, self.active, self.adam),
                         donate_argnums=0)
    self._flush = jax.jit(network.make_flush(self.adam), donate_argnums=0)
    self._forward = jax.jit(
        lambda params, rows, inv, vals, masks: network.forward_params(
            specs, params, rows, inv, vals, masks))

    def dense_topk(params, h, k):
      logits = h @ params["out"]["w"].T + params["out"]["b"]
      return jax.lax.top_k(logits, k)[1]

    self._dense_topk = jax.jit(dense_topk, static_argnums=2)

  # ----------------------------------------------------------- host logic
  def flush(self):
    """Applies the output rows' pending Adam catch-up (`adam_catch_up`)."""
    if self._catch_up and self._pending:
      self.state = self._flush(self.state)
      self._pending = False

  def _params_changed(self):
    self._index = None
    self._budget = None

  def _prepare_tables(self):
    params = self.state["params"]
    for i, l in self._hidden_lsh.items():
      l.rehash(np.asarray(params["hidden"][i - 1]["w"]))
    if self._out_lsh is not None:
      self._out_lsh.rehash(np.asarray(params["out"]["w"]))
    self._tables_ready = True

  def _hidden_masks(self, params, ib):
    """LSH active sets of the sampled hidden layers, `(B, units)` masks."""
    masks = {}
    for i in sorted(self._hidden_lsh):
      l = self._hidden_lsh[i]
      # The input of layer i is the output of layer i-1.
      sub = dict(params, hidden=params["hidden"][:i - 1])
      x = self._forward(sub, ib.rows, ib.inv, ib.vals, dict(masks))
      codes = l.query(x)
      act = tables_lib.per_example(l.tables, codes,
                                   np.zeros((len(codes), 0), np.int32),
                                   l.tuning.active_size,
                                   np.arange(self.specs[i].units,
                                             dtype=np.int32), self._rng)
      mask = np.zeros((len(codes), self.specs[i].units), np.float32)
      np.put_along_axis(mask, act, 1.0, axis=1)
      masks[i] = jnp.asarray(mask)
    return masks

  def _last_hidden(self, ib):
    params = self.state["params"]
    masks = self._hidden_masks(params, ib) if self._hidden_lsh else {}
    return self._forward(params, ib.rows, ib.inv, ib.vals, masks)

  def train_batch(self, x: data_lib.SparseInputs, labels: np.ndarray,
                  idx: np.ndarray, batch_size: int):
    """One training step on examples `idx`; returns (loss, active_rows)."""
    if not self._tables_ready:
      self._prepare_tables()
    ib = data_lib.input_batch(x, idx, batch_size, self.input_dim)
    lab = np.full((batch_size, labels.shape[1]), -1, np.int32)
    lab[:len(idx)] = labels[idx]
    params = self.state["params"]
    masks = self._hidden_masks(params, ib) if self._hidden_lsh else {}
    codes = None
    if self.active.sampled:
      codes = self._out_lsh.query(
          self._forward(params, ib.rows, ib.inv, ib.vals, masks))
    sampler = active_lib.Sampler(
        self.specs[-1], self.out_tuning,
        None if self._out_lsh is None else self._out_lsh.tables, self._perm,
        self._rng)
    out_batch, touched = self.active.select(sampler, codes, lab, batch_size)
    batch = {"rows": ib.rows, "inv": ib.inv, "vals": ib.vals,
             "mask": ib.mask, **out_batch}
    self.state, loss = self._step(self.state, batch, masks)
    self._pending = True
    self._params_changed()
    return loss, touched

  def random_slots(self, shared_size: int) -> int:
    """Positions of the shared active set kept for uniform negatives."""
    return active_lib.random_slots(self.specs[-1], self.out_tuning,
                                   shared_size)

  def shared_size(self, batch_size: int) -> int:
    """Size of the batch-shared active set."""
    return active_lib.shared_size(self.specs[-1], self.out_tuning,
                                  batch_size)

  def rebuild(self, touched_rows: Optional[np.ndarray] = None):
    """Rebuilds the tables: the rows given (all when None) are rehashed."""
    params = self.state["params"]
    for i, l in self._hidden_lsh.items():
      w = np.asarray(params["hidden"][i - 1]["w"])
      l.rebuild(np.arange(len(w)), w)
    if self._out_lsh is not None:
      if touched_rows is None:
        touched_rows = np.arange(self.specs[-1].units)
      w_rows = np.asarray(jnp.take(params["out"]["w"],
                                   jnp.asarray(touched_rows), axis=0))
      self._out_lsh.rebuild(touched_rows, w_rows)

  def rehash(self):
    """Draws new hash functions and rebuilds every table from scratch."""
    self._prepare_tables()

  def fit(self, x, y, epochs: int = 1, batch_size: int = 256,
          validation_data=None, shuffle_seed: Optional[int] = None,
          log: Optional[Callable[[dict], None]] = None,
          sparse_inference: bool = False, mode: Optional[str] = None
          ) -> List[dict]:
    """Trains for `epochs`; returns one dict per epoch.

    Args:
      x: sparse inputs (any form `sparse.data.as_inputs` accepts).
      y: labels, `(n,)` ints or a list of label lists.
      epochs: passes over the data.
      batch_size: examples per step.
      validation_data: optional `(x, y)` evaluated after each epoch.
      shuffle_seed: seed of the example order (default: the model seed).
      log: called with each epoch's dict as soon as it is ready.
      sparse_inference: alias of `mode="lsh"`.
      mode: inference mode of the validation ("dense" or "lsh").

    Returns:
      A list of `{"epoch", "loss", "seconds"[, "p@1"]}` dicts; `seconds` is
      training time only.
    """
    x = data_lib.as_inputs(x, self.input_dim)
    labels = data_lib.as_labels(y, self.specs[-1].units)
    if len(x) != len(labels):
      raise InputError(f"fit: {len(x)} inputs but {len(labels)} labels")
    if len(x) == 0:
      raise InputError("fit: no training examples")
    out = self.specs[-1]
    sched = autotune.schedule(len(x), batch_size, out.rebuild_every,
                              out.rehash_every)
    order_rng = np.random.default_rng(
        self.seed if shuffle_seed is None else shuffle_seed)
    history = []
    touched = np.zeros(out.units, bool)
    batches_done = 0
    for epoch in range(1, epochs + 1):
      t0 = time.perf_counter()
      order = order_rng.permutation(len(x))
      losses = []
      for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        loss, rows = self.train_batch(x, labels, idx, batch_size)
        losses.append(loss)
        batches_done += 1
        if self._out_lsh is not None or self._hidden_lsh:
          if rows is not None:
            touched[rows] = True
          if batches_done % sched.rehash_every == 0:
            self.rehash()
            touched[:] = False
          elif batches_done % sched.rebuild_every == 0:
            self.rebuild(np.flatnonzero(touched))
            touched[:] = False
      self.flush()
      jax.block_until_ready(self.state)
      seconds = time.perf_counter() - t0
      record = {"epoch": epoch, "loss": float(np.mean(jax.device_get(losses))),
                "seconds": seconds}
      if validation_data is not None:
        record.update(self.evaluate(*validation_data,
                                    sparse_inference=sparse_inference,
                                    mode=mode))
      history.append(record)
      if log is not None:
        log(record)
    return history

  # ------------------------------------------------------------ inference
  def _index_ready(self, cfg: retrieval.InferenceConfig):
    """The LSH inference index over the current output weights."""
    n = self.specs[-1].units
    want = autotune.tune_index(n, cfg.bucket_size, cfg.num_tables)
    if self._index is None or self._index.tuning != want:
      self.flush()
      w = np.asarray(self.state["params"]["out"]["w"])
      self._index = LayerLSH("srp", w.shape[1], want, self.seed + 11)
      # Scores differ from `w . h` by `mean(w) . h`, the same for every
      # neuron: hashing centred rows ranks neurons as the scores do, and
      # spreads them over the buckets.
      self._index.rehash(w - w.mean(0))
      bias = np.asarray(self.state["params"]["out"]["b"])
      self._frequent = retrieval.frequent_neurons(bias, cfg.frequent)
    if len(self._frequent) != min(cfg.frequent, self.specs[-1].units):
      bias = np.asarray(self.state["params"]["out"]["b"])
      self._frequent = retrieval.frequent_neurons(bias, cfg.frequent)
    return self._index

  def _lsh_batch(self, h, top_k, budget, cfg):
    index = self._index_ready(cfg)
    params = self.state["params"]
    codes = index.probe(h, cfg.probes)
    return retrieval.retrieve_topk(index.tables, codes, self._frequent,
                                   budget, np.asarray(params["out"]["w"]),
                                   np.asarray(params["out"]["b"]),
                                   np.asarray(h), top_k)

  def calibrate(self, x, target_recall: Optional[float] = None,
                inference: Optional[retrieval.InferenceConfig] = None,
                batch_size: int = 256) -> dict:
    """Sets the LSH candidate budget from examples `x` (no labels needed).

    The budget is the smallest (at most `max_budget`) for which the dense
    top-1 of at least `target_recall` of the examples is a candidate.

    Returns:
      `{"budget": int, "recall": float}` on `x` at that budget.
    """
    cfg = self._inference_config(inference)
    if target_recall is not None:
      cfg = retrieval.check_config(
          cfg._replace(target_recall=float(target_recall)),
          self.specs[-1].units)
    x = data_lib.as_inputs(x, self.input_dim)
    n = self.specs[-1].units
    cap = cfg.max_budget or retrieval.default_max_budget(n)
    cands, dense = [], []
    for ib, _ in self._batches(x, batch_size):
      h = self._last_hidden(ib)
      index = self._index_ready(cfg)
      dense.append(np.asarray(self._dense_topk(self.state["params"], h,
                                               1))[:, 0])
      cands.append(retrieval.candidates(index.tables,
                                        index.probe(h, cfg.probes),
                                        self._frequent, min(cap, n)))
    cands, dense = np.concatenate(cands), np.concatenate(dense)
    budget = retrieval.calibrate_budget(cands, dense, cfg.target_recall)
    self._budget = budget
    return {"budget": budget,
            "recall": retrieval.recall_at(cands[:, :budget], dense)}

  def _inference_config(self, inference) -> retrieval.InferenceConfig:
    cfg = self.inference if inference is None else inference
    if isinstance(cfg, dict):
      cfg = retrieval.InferenceConfig(**cfg)
    return retrieval.check_config(cfg, self.specs[-1].units)

  def lsh_budget(self, x=None, inference=None) -> int:
    """The candidate budget LSH inference uses (calibrating on `x` first
    when the config leaves it to calibration and none was done)."""
    cfg = self._inference_config(inference)
    if cfg.budget is not None:
      return int(cfg.budget)
    if self._budget is None:
      if x is None:
        raise InputError("lsh: no budget given and no examples to "
                         "calibrate it on")
      self.calibrate(x.take(np.arange(min(len(x), _CALIBRATION_EXAMPLES))),
                     inference=cfg)
    return self._budget

  def _batches(self, x, batch_size):
    for start in range(0, len(x), batch_size):
      idx = np.arange(start, min(len(x), start + batch_size))
      yield data_lib.input_batch(x, idx, batch_size, self.input_dim), idx

  def predict(self, x, top_k: int = 1, sparse_inference: bool = False,
              batch_size: int = 256, mode: Optional[str] = None,
              inference: Optional[retrieval.InferenceConfig] = None
              ) -> np.ndarray:
    """Top-k classes per example, `(n, top_k)` int32, best first.

    Args:
      x: sparse inputs.
      top_k: how many classes per example.
      sparse_inference: alias of `mode="lsh"`.
      batch_size: examples per call.
      mode: "dense" scores every class (BOLT's default); "lsh" scores only
        the candidates the LSH index retrieves, exactly (the fast path).
      inference: `retrieval.InferenceConfig` (or a dict of its fields) for
        "lsh"; default `self.inference`. Without a `budget`, the budget is
        calibrated once on the first examples of `x` (see `calibrate`).
    """
    mode = mode or ("lsh" if sparse_inference else "dense")
    if mode not in ("dense", "lsh"):
      raise InputError(f"mode: {mode!r} is not 'dense' or 'lsh'")
    x = data_lib.as_inputs(x, self.input_dim)
    self.flush()
    n = self.specs[-1].units
    if not 1 <= top_k <= n:
      raise InputError(f"top_k: must be in [1, {n}]")
    if mode == "lsh":
      cfg = self._inference_config(inference)
      budget = max(min(self.lsh_budget(x, cfg), n), top_k)
    out = []
    for ib, idx in self._batches(x, batch_size):
      h = self._last_hidden(ib)
      if mode == "dense":
        top = np.asarray(self._dense_topk(self.state["params"], h, top_k))
      else:
        top = self._lsh_batch(h, top_k, budget, cfg)
      out.append(top[:len(idx)])
    return (np.concatenate(out) if out
            else np.zeros((0, top_k), np.int32)).astype(np.int32)

  def evaluate(self, x, y, batch_size: int = 256,
               sparse_inference: bool = False, mode: Optional[str] = None,
               inference=None) -> dict:
    """Precision@1: how often the top class is one of the labels."""
    labels = data_lib.as_labels(y, self.specs[-1].units)
    top = self.predict(x, 1, sparse_inference, batch_size, mode,
                       inference)[:, 0]
    hit = (labels == top[:, None]).any(-1)
    return {"p@1": float(hit.mean()) if len(hit) else float("nan")}

  # ---------------------------------------------------------- save / load
  def config(self) -> dict:
    return {"layers": [dict(dataclasses.asdict(s), kind=type(s).__name__)
                       for s in self.specs],
            "input_dim": self.input_dim,
            "learning_rate": self.adam.learning_rate, "seed": self.seed}

  def save(self, path: str):
    """Writes the architecture and parameters to one `.npz` file."""
    self.flush()
    flat = {}
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(
        self.state["params"]):
      flat[jax.tree_util.keystr(keypath)] = np.asarray(leaf)
    with open(path, "wb") as f:
      np.savez(f, __config__=np.array(json.dumps(self.config())), **flat)

  @classmethod
  def load(cls, path: str) -> "Model":
    """Reads a model written by `save` (tables are rebuilt on first use)."""
    try:
      with np.load(path) as z:
        cfg = json.loads(str(z["__config__"]))
        arrays = {k: z[k] for k in z.files if k != "__config__"}
    except (OSError, ValueError, KeyError) as e:
      raise InputError(f"load: cannot read a model from {path}: {e}") from e
    specs = []
    for d in cfg["layers"]:
      kind = d.pop("kind")
      specs.append(Dense(**d) if kind == "Dense" else Output(**d))
    model = cls(specs, cfg["input_dim"], cfg["learning_rate"], cfg["seed"])
    params = model.state["params"]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    new = [jnp.asarray(arrays[jax.tree_util.keystr(p)]) for p, _ in leaves]
    model.state["params"] = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(params), new)
    model._params_changed()  # pylint: disable=protected-access
    return model
