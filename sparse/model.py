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
from sparse.errors import InputError
from sparse.layer_lsh import LayerLSH
from sparse.lsh_inference import OutputIndex
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
    self.state = network.init_state(self.specs, self.input_dim,
                                    jax.random.key(seed), self._catch_up)
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
    self._index = OutputIndex(seed + 11)   # built on first LSH use
    self._compile()
    self._tables_ready = False
    self._pending = False   # output rows owe a catch-up (see `flush`)

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
    self._index.invalidate()

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
      mask = l.active_mask(x, self.specs[i].units, self._rng)
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
  def _out_weights(self):
    """Host views (no copy) of the output weights and bias."""
    self.flush()
    out = self.state["params"]["out"]
    return np.asarray(out["w"]), np.asarray(out["b"])

  def _inference_config(self, inference) -> retrieval.InferenceConfig:
    cfg = self.inference if inference is None else inference
    if isinstance(cfg, dict):
      cfg = retrieval.InferenceConfig(**cfg)
    return retrieval.check_config(cfg)

  def _voted_and_dense(self, x, cfg, sizes, budget, batch_size):
    """Voted candidates `{F: (n, budget)}` at each frequent count F of
    `sizes` (the F highest-bias neurons left out), and the dense top-1
    `(n,)`, of the examples `x`."""
    w, b = self._out_weights()
    voted, dense = {f: [] for f in sizes}, []
    for ib, idx in self._batches(x, batch_size):
      h = self._last_hidden(ib)
      top = np.asarray(self._dense_topk(self.state["params"], h, 1))[:, 0]
      dense.append(top[:len(idx)])
      for f, v in self._index.voted(h, w, b, cfg, sizes, budget).items():
        voted[f].append(v[:len(idx)])
    if not dense:
      return {f: np.zeros((0, 0), np.int32) for f in sizes}, \
          np.zeros(0, np.int32)
    return {f: np.concatenate(v) for f, v in voted.items()}, \
        np.concatenate(dense)

  def calibrate(self, x, target_recall: Optional[float] = None,
                inference=None, batch_size: int = 256) -> dict:
    """Sets LSH inference's frequent count and budget from examples `x`
    (no labels needed).

    The pair chosen is the cheapest (`retrieval.choose_setting`) for which
    the dense top-1 of at least `target_recall` of the examples is a
    candidate, the budget at most `max_budget`; a `frequent` or `budget`
    given in the config is kept as it is.

    Returns:
      `{"frequent": int, "budget": int, "recall": float}` on `x`.
    """
    key = cfg = self._inference_config(inference)
    if target_recall is not None:
      cfg = self._inference_config(
          cfg._replace(target_recall=float(target_recall)))
    x = data_lib.as_inputs(x, self.input_dim)
    n = self.specs[-1].units
    cap = min(cfg.max_budget or retrieval.default_max_budget(n), n)
    if cfg.budget is not None:
      cap = min(cfg.budget, n)
    sizes = ([min(cfg.frequent, n)] if cfg.frequent is not None
             else autotune.frequent_sizes(n))
    lsh = self._index.ready(*self._out_weights(), cfg)
    voted, dense = self._voted_and_dense(x, cfg, sizes, cap, batch_size)
    setting = retrieval.choose_setting(
        voted, dense, self._index.rank_by_bias()[dense], cfg.target_recall,
        autotune.CANDIDATE_COST, cfg.budget,
        autotune.vote_cost(n, lsh.tuning, cfg.probes))
    # Kept for predictions under the config given (`key`).
    self._index.calibrated = (key, setting)
    return setting._asdict()

  def lsh_setting(self, x=None, inference=None) -> retrieval.Setting:
    """The frequent count and budget LSH inference uses (calibrating on
    `x` first when the config leaves one to calibration and none was
    done)."""
    cfg = self._inference_config(inference)
    n = self.specs[-1].units
    if cfg.budget is not None and cfg.frequent is not None:
      f = min(cfg.frequent, n)
      return retrieval.Setting(f, int(min(cfg.budget, n - f)), float("nan"))
    # A setting calibrated under another config does not hold for this.
    if self._index.calibrated is None or self._index.calibrated[0] != cfg:
      if x is None:
        raise InputError("lsh: no budget given and no examples to "
                         "calibrate it on")
      x = data_lib.as_inputs(x, self.input_dim)
      self.calibrate(x.take(np.arange(min(len(x), _CALIBRATION_EXAMPLES))),
                     inference=cfg)
    return self._index.calibrated[1]

  def lsh_budget(self, x=None, inference=None) -> int:
    """The voted candidates per example LSH inference scores beyond the
    frequent ones (see `lsh_setting`)."""
    return self.lsh_setting(x, inference).budget

  def lsh_recall(self, x, inference=None, batch_size: int = 256) -> float:
    """Fraction of `x` whose dense top-1 is among its LSH candidates."""
    x = data_lib.as_inputs(x, self.input_dim)
    cfg = self._inference_config(inference)
    s = self.lsh_setting(x, cfg)
    voted, dense = self._voted_and_dense(x, cfg, [s.frequent], s.budget,
                                         batch_size)
    if not len(dense):
      return float("nan")
    frequent = self._index.rank_by_bias()[dense] < s.frequent
    return float((frequent | (voted[s.frequent] == dense[:, None]).any(-1)
                  ).mean())

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
      setting = self.lsh_setting(x, cfg)
      budget = max(setting.budget, top_k - setting.frequent)
      w, b = self._out_weights()
    out = []
    for ib, idx in self._batches(x, batch_size):
      h = self._last_hidden(ib)
      if mode == "dense":
        top = np.asarray(self._dense_topk(self.state["params"], h, top_k))
      else:
        top = self._index.topk(h, w, b, cfg, setting.frequent, budget,
                               top_k)
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
    flat = network.flat_params(self.state["params"])
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
    model.state["params"] = network.restore_params(model.state["params"],
                                                   arrays)
    model._params_changed()  # pylint: disable=protected-access
    return model
