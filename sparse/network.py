"""The model's pure functions: one hidden forward pass, the train step.

`forward` is the only forward pass through the hidden layers: training
calls it on the gathered input rows (to differentiate with respect to
them), inference on the rows gathered from the full table. The output
layer is the model's `ActiveSet` (see `sparse.active_set`).
"""
import math
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from sparse import active_set as active_lib
from sparse import layers


def init_state(specs: List, input_dim: int, key, catch_up: bool) -> dict:
  """Parameters, Adam moments and step count (and `last`, with catch-up).

  Returns:
    `{"params", "m", "v", "count"[, "last"]}`; params are
    `{"in": {"w", "b"}, "hidden": [{"w", "b"}, ...], "out": {"w", "b"}}`.
  """
  keys = jax.random.split(key, len(specs))
  dims = [input_dim] + [s.units for s in specs]
  params = {"in": {"w": jax.random.normal(keys[0], (input_dim, dims[1]))
                         * math.sqrt(1.0 / 32),
                   "b": jnp.zeros(dims[1])},
            "hidden": []}
  for i in range(1, len(specs) - 1):
    params["hidden"].append({
        "w": jax.random.normal(keys[i], (dims[i + 1], dims[i]))
             * math.sqrt(2.0 / dims[i]),
        "b": jnp.zeros(dims[i + 1])})
  n, d = specs[-1].units, dims[-2]
  params["out"] = {"w": jax.random.normal(keys[-1], (n, d)) *
                        math.sqrt(1.0 / d), "b": jnp.zeros(n)}
  state = {"params": params, "m": jax.tree.map(jnp.zeros_like, params),
           "v": jax.tree.map(jnp.zeros_like, params),
           "count": jnp.zeros((), jnp.int32)}
  if catch_up:
    state["last"] = jnp.zeros((n,), jnp.int32)
  return state


def forward(specs: List, in_rows, in_b, hidden: List[Dict], inv, vals,
            hidden_masks: Dict) -> jax.Array:
  """Output of the last hidden layer.

  Args:
    specs: the model's layer specs (`specs[:-1]` are the hidden layers).
    in_rows: `(U, D1)` first-layer weight rows of the batch's feature ids.
    in_b: `(D1,)` first-layer bias.
    hidden: params `{"w", "b"}` of the layers after the first (any prefix).
    inv, vals: `(B, P)` index into `in_rows` and value of each nonzero.
    hidden_masks: `{layer index: (B, units) mask}` of sampled layers.

  Returns:
    `(B, units)` activations of the last layer in `hidden`.
  """
  act = layers.ACTIVATIONS[specs[0].activation]
  h = act(layers.embed_bag(in_rows, inv, vals) + in_b)
  for j, p in enumerate(hidden):
    spec = specs[j + 1]
    mask = hidden_masks.get(j + 1)
    if mask is None:
      h = layers.ACTIVATIONS[spec.activation](h @ p["w"].T + p["b"])
    else:
      h = layers.sampled_dense(h, p["w"], p["b"], mask, spec.activation)
  return h


def forward_params(specs: List, params, rows, inv, vals, hidden_masks):
  """`forward` from full parameters and the batch's feature ids `rows`."""
  return forward(specs, layers.gather_rows(params["in"]["w"], rows),
                 params["in"]["b"], params["hidden"], inv, vals,
                 hidden_masks)


def make_step(specs: List, active: active_lib.ActiveSet,
              cfg: layers.AdamConfig):
  """`step(state, batch, hidden_masks) -> (state, loss)`, to be jitted."""

  def loss_fn(trainable, batch, hidden_masks):
    h = forward(specs, trainable["in_rows"], trainable["in_b"],
                trainable["hidden"], batch["inv"], batch["vals"],
                hidden_masks)
    logits = active.logits(h, trainable["out"], batch)
    return layers.softmax_xent(logits, batch["label_pos"], batch["mask"])

  def step(state, batch, hidden_masks):
    params, m, v = state["params"], state["m"], state["v"]
    count = state["count"] + 1
    in_rows = batch["rows"]
    trainable = {
        "in_rows": layers.gather_rows(params["in"]["w"], in_rows),
        "in_b": params["in"]["b"], "hidden": params["hidden"],
        "out": active.gather(params["out"], batch)}
    loss, g = jax.value_and_grad(loss_fn)(trainable, batch, hidden_masks)
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
    new_p["out"], new_m["out"], new_v["out"], last = active.update(
        params["out"], m["out"], v["out"], state.get("last"), g["out"], batch,
        count, cfg)
    new_state = {"params": new_p, "m": new_m, "v": new_v, "count": count}
    if last is not None:
      new_state["last"] = last
    return new_state, loss

  return step


def make_flush(cfg: layers.AdamConfig):
  """`flush(state) -> state`: brings every output row to step `count`.

  See `specs.Output.adam_catch_up`.
  """

  def flush(state):
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

  return flush


def flat_params(params) -> Dict[str, np.ndarray]:
  """`{key path: array}` of a params tree (for `.npz` files)."""
  return {jax.tree_util.keystr(k): np.asarray(leaf)
          for k, leaf in jax.tree_util.tree_leaves_with_path(params)}


def restore_params(template, arrays: Dict[str, np.ndarray]):
  """The tree of `template` with its leaves read from `flat_params` output."""
  leaves = jax.tree_util.tree_leaves_with_path(template)
  new = [jnp.asarray(arrays[jax.tree_util.keystr(k)]) for k, _ in leaves]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template),
                                      new)
