"""A Keras-like model whose output layer is trained on an LSH-sampled subset.

    model = Model([Dense(256), Output(n_classes)], input_dim=100_000)
    history = model.fit(x, y, epochs=5, batch_size=256)
    model.evaluate(x_test, y_test)            # {"p@1": ..., "loss": ...}
    model.predict(x_test, top_k=5, sparse_inference=True)
    model.save("m.npz"); model = Model.load("m.npz")

`x` is sparse feature ids (see `sparse.data.as_inputs`): the first `Dense`
layer is an embedding bag whose touched rows alone get (lazy) Adam updates.
`Output(n, sparsity=...)` is a softmax over an active set chosen by LSH;
`sparsity=1.0` gives the ordinary dense softmax layer. `Dense(units,
sparsity<1)` after the first layer is a sampled hidden layer.
"""
import dataclasses
import json
import math
import time
from typing import Callable, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sparse import autotune
from sparse import data as data_lib
from sparse import layers
from sparse import lsh
from sparse import tables as tables_lib
from sparse.errors import InputError


@dataclasses.dataclass
class Dense:
  """A hidden layer; `sparsity < 1` samples its active neurons by LSH."""
  units: int
  activation: str = "relu"
  sparsity: float = 1.0
  hashes_per_table: Optional[int] = None
  num_tables: Optional[int] = None
  range_pow: Optional[int] = None
  reservoir: Optional[int] = None


@dataclasses.dataclass
class Output:
  """A softmax output layer over `units` classes, sampled by LSH.

  Attributes:
    units: number of classes N.
    sparsity: active fraction; None = BOLT's autotuned value, 1.0 = dense.
    active_set: "shared" (one set of `shared_size` neurons for the batch:
      its labels, then the neurons its probes hit most, then a top-up) or
      "per_example" (BOLT's k neurons per example).
    shared_size: size of the shared set; None = min(N, batch + 4k).
    hash: "dwta" or "srp".
    hashes_per_table, num_tables, range_pow, reservoir: LSH overrides.
    rebuild_every, rehash_every: schedule overrides, in batches.
    adam_catch_up: lazy Adam on the output rows also applies, when a row is
      next touched (and before inference), the steps dense Adam would have
      taken while it sat outside the active sets with zero gradient (its
      momentum keeps moving it); plain lazy Adam skips them.
    random_negatives: ("shared") positions of the active set kept for
      neurons drawn uniformly from those not already chosen as labels or
      by the probes (the top-up), so that every neuron is pushed down now
      and then; None = 2k (k = sparsity * N), 0 = probes first.
    sampling_correction: ("shared") trains on an estimate of the full
      softmax: the top-up neurons, a uniform sample of the `U` neurons not
      chosen as labels or by the probes, stand for all of them, so their
      logits get `+log(U / number drawn)` in the training loss (zero when
      the active set is every neuron).
  """
  units: int
  sparsity: Optional[float] = None
  active_set: str = "shared"
  shared_size: Optional[int] = None
  hash: str = "dwta"
  hashes_per_table: Optional[int] = None
  num_tables: Optional[int] = None
  range_pow: Optional[int] = None
  reservoir: Optional[int] = None
  rebuild_every: Optional[int] = None
  rehash_every: Optional[int] = None
  adam_catch_up: bool = True
  random_negatives: Optional[int] = None
  sampling_correction: bool = False


def _tuning(units, spec) -> autotune.LayerTuning:
  kw = {}
  for name in ("hashes_per_table", "num_tables", "range_pow", "reservoir"):
    kw[name] = getattr(spec, name, None)
  t = autotune.tune_layer(units, spec.sparsity, **kw)
  if isinstance(spec, Output) and spec.hash == "srp":
    # SimHash gives one bit per hash: K = range_pow bits per table.
    t = t._replace(hashes_per_table=spec.hashes_per_table or t.range_pow)
  return t


class _LayerLSH:
  """Hash functions and tables of one sampled layer (host-side state)."""

  def __init__(self, family: str, dim: int, tuning: autotune.LayerTuning,
               seed: int):
    if family not in lsh.FAMILIES:
      raise InputError(f"hash: unknown family {family!r}, use one of "
                       f"{sorted(lsh.FAMILIES)}")
    self.family = lsh.FAMILIES[family]
    self.dim, self.tuning, self.seed = dim, tuning, seed
    self.draws = 0
    self.params = None
    self.tables = None

  def rehash(self, w: np.ndarray):
    """New hash functions and a full rebuild from weights `w` (N, dim)."""
    self.draws += 1
    key = jax.random.fold_in(jax.random.key(self.seed), self.draws)
    self.params = self.family.init(key, self.dim, self.tuning.num_tables,
                                   self.tuning.hashes_per_table)
    codes = lsh.hash_rows(self.family, self.params, w)
    self.tables = tables_lib.build(codes, lsh.num_buckets(self.params),
                                   self.tuning.reservoir,
                                   seed=self.seed + self.draws)

  def rebuild(self, rows: np.ndarray, w_rows: np.ndarray):
    """Re-inserts the neurons `rows` whose weights changed."""
    if len(rows):
      codes = lsh.hash_rows(self.family, self.params, w_rows)
      tables_lib.update(self.tables, rows, codes, seed=self.seed + self.draws)


_hash = jax.jit(lambda fn, p, x: fn(p, x), static_argnums=0)


def sampling_offsets(k: int, n_fixed: int, n: int, correct: bool
                     ) -> np.ndarray:
  """Logit offsets `(k,)` of a shared active set for the training loss.

  The first `n_fixed` entries (labels, probed neurons) count once; the
  rest are a uniform sample of the `n - n_fixed` other neurons, so each
  stands for `(n - n_fixed) / (k - n_fixed)` of them: with `correct`, it
  gets that log-weight, and the logsumexp over the active set estimates
  the one over all `n` neurons. Zero when `k == n` or not `correct`.
  """
  corr = np.zeros(k, np.float32)
  if correct and k > n_fixed:
    corr[n_fixed:] = math.log((n - n_fixed) / (k - n_fixed))
  return corr


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
    if out.active_set not in ("shared", "per_example"):
      raise InputError(f"active_set: {out.active_set!r} is not 'shared' or "
                       "'per_example'")
    self.specs = list(layer_specs)
    self.input_dim = int(input_dim)
    self.adam = layers.AdamConfig(learning_rate=float(learning_rate))
    self.seed = int(seed)
    self.out_tuning = _tuning(out.units, out)
    self.dense_output = self.out_tuning.sparsity >= 1.0
    self._catch_up = bool(out.adam_catch_up) and not self.dense_output
    self.state = self._init_state(jax.random.key(seed))
    self._hidden_lsh = {}
    for i, s in enumerate(self.specs[1:-1], start=1):
      if s.sparsity < 1.0:
        t = _tuning(s.units, s)
        self._hidden_lsh[i] = _LayerLSH("dwta", self.specs[i - 1].units, t,
                                        seed + 100 * i)
    self._out_lsh = None
    if not self.dense_output:
      self._out_lsh = _LayerLSH(out.hash, self.specs[-2].units,
                                self.out_tuning, seed + 7)
    self._perm = np.random.default_rng(seed).permutation(
        out.units).astype(np.int32)
    self._rng = np.random.default_rng(seed + 1)
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

  # ------------------------------------------------------------- compiled
  def _hidden(self, params, rows, inv, vals, hidden_masks):
    """Forward to the last hidden layer."""
    e = layers.gather_rows(params["in"]["w"], rows)
    act = layers.ACTIVATIONS[self.specs[0].activation]
    h = act(layers.embed_bag(e, inv, vals) + params["in"]["b"])
    for j, p in enumerate(params["hidden"]):
      spec = self.specs[j + 1]
      mask = hidden_masks.get(j + 1)
      if mask is None:
        h = layers.ACTIVATIONS[spec.activation](h @ p["w"].T + p["b"])
      else:
        h = layers.sampled_dense(h, p["w"], p["b"], mask, spec.activation)
    return h

  def _compile(self):
    cfg = self.adam
    per_example = self.specs[-1].active_set == "per_example"
    dense_out = self.dense_output

    def loss_fn(trainable, p_out_rest, batch, hidden_masks):
      params = {"in": {"w": None, "b": trainable["in_b"]},
                "hidden": trainable["hidden"]}
      e = trainable["in_rows"]
      act = layers.ACTIVATIONS[self.specs[0].activation]
      h = act(layers.embed_bag(e, batch["inv"], batch["vals"])
              + params["in"]["b"])
      for j, p in enumerate(params["hidden"]):
        spec = self.specs[j + 1]
        mask = hidden_masks.get(j + 1)
        if mask is None:
          h = layers.ACTIVATIONS[spec.activation](h @ p["w"].T + p["b"])
        else:
          h = layers.sampled_dense(h, p["w"], p["b"], mask, spec.activation)
      if dense_out:
        logits = h @ trainable["out_w"].T + trainable["out_b"]
      elif per_example:
        logits = layers.per_example_logits(h, trainable["out_w"],
                                           trainable["out_b"],
                                           batch["out_inv"])
      else:
        logits = layers.shared_logits(h, trainable["out_w"],
                                      trainable["out_b"]) + batch["out_corr"]
      del p_out_rest
      return layers.softmax_xent(logits, batch["label_pos"], batch["mask"])

    def step(state, batch, hidden_masks):
      params, m, v = state["params"], state["m"], state["v"]
      count = state["count"] + 1
      in_rows = batch["rows"]
      out_rows = None if dense_out else batch["out_rows"]
      trainable = {
          "in_rows": layers.gather_rows(params["in"]["w"], in_rows),
          "in_b": params["in"]["b"], "hidden": params["hidden"],
          "out_w": (params["out"]["w"] if dense_out else
                    layers.gather_rows(params["out"]["w"], out_rows)),
          "out_b": (params["out"]["b"] if dense_out else
                    layers.gather_rows(params["out"]["b"], out_rows)),
      }
      loss, g = jax.value_and_grad(loss_fn)(trainable, None, batch,
                                            hidden_masks)
      new_p, new_m, new_v = {}, {}, {}
      w, mw, vw = layers.lazy_adam_rows(params["in"]["w"], m["in"]["w"],
                                        v["in"]["w"], in_rows, g["in_rows"],
                                        count, cfg)
      b, mb, vb = layers.adam_dense(params["in"]["b"], m["in"]["b"],
                                    v["in"]["b"], g["in_b"], count, cfg)
      new_p["in"], new_m["in"], new_v["in"] = ({"w": w, "b": b},
                                               {"w": mw, "b": mb},
                                               {"w": vw, "b": vb})
      hp, hm, hv = [], [], []
      for j, (p, mm, vv, gg) in enumerate(zip(params["hidden"], m["hidden"],
                                              v["hidden"], g["hidden"])):
        row_mask = hidden_masks.get(j + 1)
        touched = None if row_mask is None else row_mask.max(0)
        out = {k: layers.adam_dense(p[k], mm[k], vv[k], gg[k], count, cfg,
                                    touched) for k in ("w", "b")}
        hp.append({k: o[0] for k, o in out.items()})
        hm.append({k: o[1] for k, o in out.items()})
        hv.append({k: o[2] for k, o in out.items()})
      new_p["hidden"], new_m["hidden"], new_v["hidden"] = hp, hm, hv
      if dense_out:
        ow, mow, vow = layers.adam_dense(params["out"]["w"], m["out"]["w"],
                                         v["out"]["w"], g["out_w"], count, cfg)
        ob, mob, vob = layers.adam_dense(params["out"]["b"], m["out"]["b"],
                                         v["out"]["b"], g["out_b"], count, cfg)
      else:
        last = state.get("last")
        ow, mow, vow, *new_last = layers.lazy_adam_rows(
            params["out"]["w"], m["out"]["w"], v["out"]["w"], out_rows,
            g["out_w"], count, cfg, last)
        ob, mob, vob, *_ = layers.lazy_adam_rows(
            params["out"]["b"], m["out"]["b"], v["out"]["b"], out_rows,
            g["out_b"], count, cfg, last)
      new_p["out"], new_m["out"], new_v["out"] = ({"w": ow, "b": ob},
                                                  {"w": mow, "b": mob},
                                                  {"w": vow, "b": vob})
      new_state = {"params": new_p, "m": new_m, "v": new_v, "count": count}
      if "last" in state:
        new_state["last"] = new_last[0]
      return new_state, loss

    def flush(state):
      # Brings every output row to step `count` (see `adam_catch_up`).
      count, last = state["count"], state["last"]
      params, m, v = (dict(state[k]) for k in ("params", "m", "v"))
      out_p, out_m, out_v = {}, {}, {}
      for name in ("w", "b"):
        out_p[name], out_m[name], out_v[name] = layers.catch_up_rows(
            params["out"][name], m["out"][name], v["out"][name], last,
            count, cfg)
      params["out"], m["out"], v["out"] = out_p, out_m, out_v
      return dict(state, params=params, m=m, v=v,
                  last=jnp.full_like(last, count))

    self._step = jax.jit(step, donate_argnums=0)
    self._flush = jax.jit(flush, donate_argnums=0)
    self._forward = jax.jit(
        lambda params, rows, inv, vals, masks: self._hidden(
            params, rows, inv, vals, masks))

    def dense_topk(params, h, k):
      logits = h @ params["out"]["w"].T + params["out"]["b"]
      return jax.lax.top_k(logits, k)[1]

    def shared_topk(params, h, active, k):
      logits = (h @ layers.gather_rows(params["out"]["w"], active).T
                + params["out"]["b"][active])
      return active[jax.lax.top_k(logits, k)[1]]

    def per_example_topk(params, h, active, k):
      logits = (jnp.einsum("bd,bkd->bk", h, params["out"]["w"][active])
                + params["out"]["b"][active])
      return jnp.take_along_axis(active, jax.lax.top_k(logits, k)[1], -1)

    self._dense_topk = jax.jit(dense_topk, static_argnums=2)
    self._shared_topk = jax.jit(shared_topk, static_argnums=3)
    self._per_example_topk = jax.jit(per_example_topk, static_argnums=3)

  # ----------------------------------------------------------- host logic
  def flush(self):
    """Applies the output rows' pending Adam catch-up (`adam_catch_up`)."""
    if self._catch_up and self._pending:
      self.state = self._flush(self.state)
      self._pending = False

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
      x = self._forward_upto(params, ib, masks, i)
      codes = np.asarray(_hash(l.family.hash, l.params, x))
      act = tables_lib.per_example(l.tables, codes,
                                   np.zeros((len(codes), 0), np.int32),
                                   l.tuning.active_size,
                                   np.arange(self.specs[i].units,
                                             dtype=np.int32), self._rng)
      mask = np.zeros((len(codes), self.specs[i].units), np.float32)
      np.put_along_axis(mask, act, 1.0, axis=1)
      masks[i] = jnp.asarray(mask)
    return masks

  def _forward_upto(self, params, ib, masks, i):
    """Output of hidden layer i-1 (the input of layer i)."""
    sub = dict(params)
    sub["hidden"] = params["hidden"][:i - 1]
    return self._forward(sub, ib.rows, ib.inv, ib.vals, dict(masks))

  def _label_batch(self, labels, idx, batch_size):
    lab = np.full((batch_size, labels.shape[1]), -1, np.int32)
    lab[:len(idx)] = labels[idx]
    return lab

  def train_batch(self, x: data_lib.SparseInputs, labels: np.ndarray,
                  idx: np.ndarray, batch_size: int):
    """One training step on examples `idx`; returns (loss, active_rows)."""
    if not self._tables_ready:
      self._prepare_tables()
    ib = data_lib.input_batch(x, idx, batch_size, self.input_dim)
    lab = self._label_batch(labels, idx, batch_size)
    params = self.state["params"]
    masks = self._hidden_masks(params, ib) if self._hidden_lsh else {}
    batch = {"rows": ib.rows, "inv": ib.inv, "vals": ib.vals,
             "mask": ib.mask}
    touched = None
    out = self.specs[-1]
    if self.dense_output:
      batch["label_pos"] = lab
    else:
      h = self._forward(params, ib.rows, ib.inv, ib.vals, masks)
      codes = np.asarray(_hash(self._out_lsh.family.hash,
                               self._out_lsh.params, h))
      if out.active_set == "shared":
        k = self.shared_size(batch_size)
        active, label_pos, n_fixed = tables_lib.batch_union(
            self._out_lsh.tables, codes, lab, k, self._perm, self._rng,
            random_slots=self.random_slots(k), return_fixed=True)
        batch["out_rows"] = active
        batch["out_corr"] = sampling_offsets(
            k, n_fixed, out.units, out.sampling_correction)
        batch["label_pos"] = label_pos
        touched = active
      else:
        k = self.out_tuning.active_size
        active = tables_lib.per_example(self._out_lsh.tables, codes, lab, k,
                                        self._perm, self._rng)
        uniq, inv = np.unique(active, return_inverse=True)
        u = data_lib._bucket(len(uniq))  # pylint: disable=protected-access
        rows = np.full(u, out.units, np.int32)
        rows[:len(uniq)] = uniq
        batch["out_rows"] = rows
        batch["out_inv"] = inv.reshape(active.shape).astype(np.int32)
        m = lab.shape[1]
        pos = np.broadcast_to(np.arange(m, dtype=np.int32), lab.shape)
        batch["label_pos"] = np.where(lab >= 0, pos, -1).astype(np.int32)
        touched = uniq
    self.state, loss = self._step(self.state, batch, masks)
    self._pending = True
    return loss, touched

  def random_slots(self, shared_size: int) -> int:
    """Positions of the shared active set kept for uniform negatives."""
    r = self.specs[-1].random_negatives
    if r is None:
      r = 2 * self.out_tuning.active_size
    return int(min(max(r, 0), shared_size))

  def shared_size(self, batch_size: int) -> int:
    """Size of the batch-shared active set."""
    out = self.specs[-1]
    if out.shared_size is not None:
      return int(min(out.units, out.shared_size))
    return int(min(out.units, batch_size + 4 * self.out_tuning.active_size))

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
          sparse_inference: bool = False) -> List[dict]:
    """Trains for `epochs`; returns one dict per epoch.

    Args:
      x: sparse inputs (any form `sparse.data.as_inputs` accepts).
      y: labels, `(n,)` ints or a list of label lists.
      epochs: passes over the data.
      batch_size: examples per step.
      validation_data: optional `(x, y)` evaluated after each epoch.
      shuffle_seed: seed of the example order (default: the model seed).
      log: called with each epoch's dict as soon as it is ready.
      sparse_inference: evaluate validation data with the LSH fast path.

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
    n_out = out.units
    touched = np.zeros(n_out, bool)
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
                                    sparse_inference=sparse_inference))
      history.append(record)
      if log is not None:
        log(record)
    return history

  def _predict_batch(self, ib, top_k: int, sparse_inference: bool,
                     batch_size: int):
    params = self.state["params"]
    masks = self._hidden_masks(params, ib) if self._hidden_lsh else {}
    h = self._forward(params, ib.rows, ib.inv, ib.vals, masks)
    if self.dense_output or not sparse_inference:
      return np.asarray(self._dense_topk(params, h, top_k))
    codes = np.asarray(_hash(self._out_lsh.family.hash, self._out_lsh.params,
                             h))
    no_labels = np.zeros((len(codes), 0), np.int32)
    if self.specs[-1].active_set == "shared":
      active, _ = tables_lib.batch_union(
          self._out_lsh.tables, codes, no_labels,
          max(self.shared_size(batch_size), top_k), self._perm, self._rng)
      return np.asarray(self._shared_topk(params, h, active, top_k))
    active = tables_lib.per_example(
        self._out_lsh.tables, codes, no_labels,
        max(self.out_tuning.active_size, top_k), self._perm, self._rng)
    return np.asarray(self._per_example_topk(params, h, active, top_k))

  def predict(self, x, top_k: int = 1, sparse_inference: bool = False,
              batch_size: int = 256) -> np.ndarray:
    """Top-k classes per example, `(n, top_k)` int32, best first.

    Args:
      x: sparse inputs.
      top_k: how many classes per example.
      sparse_inference: score only the neurons LSH retrieves (fast path)
        instead of all of them (BOLT's default).
      batch_size: examples per call.
    """
    x = data_lib.as_inputs(x, self.input_dim)
    self.flush()
    if not 1 <= top_k <= self.specs[-1].units:
      raise InputError(f"top_k: must be in [1, {self.specs[-1].units}]")
    if sparse_inference and not self._tables_ready:
      self._prepare_tables()
    out = []
    for start in range(0, len(x), batch_size):
      idx = np.arange(start, min(len(x), start + batch_size))
      ib = data_lib.input_batch(x, idx, batch_size, self.input_dim)
      out.append(self._predict_batch(ib, top_k, sparse_inference,
                                     batch_size)[:len(idx)])
    return (np.concatenate(out) if out
            else np.zeros((0, top_k), np.int32)).astype(np.int32)

  def evaluate(self, x, y, batch_size: int = 256,
               sparse_inference: bool = False) -> dict:
    """Precision@1: how often the top class is one of the labels."""
    labels = data_lib.as_labels(y, self.specs[-1].units)
    top = self.predict(x, 1, sparse_inference, batch_size)[:, 0]
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
    return model
