"""Benchmarks of the federated simulation, run by `python -m launch.bench NAME`.

Each benchmark returns a `BenchResult`: a Markdown table and a one-line
summary. Ratios are measured side by side in one process; absolute times
are context only.
"""
import statistics
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import client as client_lib
from fairjax import data as data_lib
from fairjax import models
from fairjax import server as server_lib
from fairjax import simulate


class BenchResult(NamedTuple):
  markdown: str
  summary: str


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def loop_round(sim: simulate.Simulation, state, rnd, fns):
  """The same round as `Simulation.round`, as a Python loop of jitted steps.

  Every client runs its local epochs one jitted minibatch step at a time
  (the way a per-client simulator is usually written); a client's steps past
  its own data are skipped, since they would change nothing. Randomness,
  screening and weighting are those of `Simulation.round`.

  Args:
    sim: the simulation.
    state: its state.
    rnd: the round number.
    fns: from `build_loop_fns(sim)`.

  Returns:
    new server params (the comparison target).
  """
  params = state["params"]
  users = state["users"]
  cfg = sim.local_cfg
  key = jax.random.fold_in(jax.random.PRNGKey(sim.config.seed), rnd)
  total, weight = None, 0.0
  for lv, batch in enumerate(sim.sample(rnd)):
    if batch is None:
      continue
    shared = fns["collapse", lv](params)
    rngs = jax.random.split(jax.random.fold_in(key, lv), len(batch.users))
    level_sum = None
    for k, u in enumerate(batch.users):
      row = {n: {"embedding": users[n][u][None, :]} for n in users}
      p = models.merge_user_params(row, shared)
      opt_state = fns["opt_init"](p)
      items, mask = jnp.asarray(batch.items[k]), jnp.asarray(batch.mask[k])
      live_steps = -(-int(batch.mask[k].sum()) // cfg.batch_size)
      for ekey in client_lib.epoch_keys(rngs[k], cfg.local_epochs):
        order, valid, skeys = fns["batches"](ekey, mask)
        for t in range(live_steps):
          (p, opt_state), _ = fns["step", lv](p, opt_state, items, mask, order[t], valid[t],
                                              skeys[t])
      delta, w = fns["finish"](p, shared, batch.weights[k])
      level_sum = delta if level_sum is None else fns["add"](level_sum, delta)
      weight = weight + w
    expanded = fns["expand", lv](level_sum)
    total = expanded if total is None else fns["add"](total, expanded)
  new_params, _ = sim._server_step(params, state["opt_state"], total, weight)  # pylint: disable=protected-access
  return new_params


def build_loop_fns(sim):
  """The jitted pieces of `loop_round`, built once per simulation."""
  kind = sim.kind
  screen = sim.screen
  cfg = sim.local_cfg

  def finish(p, shared, weight):
    _, new_shared = models.split_user_params(p, kind)
    delta = jax.tree.map(jnp.subtract, new_shared, shared)
    delta, ok, _ = server_lib.screen_update(delta, screen)
    w = weight * ok
    return jax.tree.map(lambda d: d * w, delta), w

  fns = {"add": jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b)),
         "opt_init": jax.jit(sim.local_opt.init),
         "batches": jax.jit(lambda k, m: client_lib.epoch_batches(k, m, cfg.batch_size)),
         "finish": jax.jit(finish)}
  for lv, plan in enumerate(sim.plan.levels):
    if not plan.trains:
      continue
    fns["step", lv] = jax.jit(client_lib.make_step(plan.model, sim.local_opt, cfg))
    fns["collapse", lv] = jax.jit(plan.down.collapse)
    fns["expand", lv] = jax.jit(plan.down.expand)
  return fns


def fair_round(quick=False):
  """A FAIR round under vmap against a Python loop of jitted client steps.

  ML-1M (ML-100K with quick=True), NeuMF, wide capacity distribution,
  64 and 256 clients per round. Both paths compute the same round; the
  resulting server params are checked to agree.
  """
  from configs import ml1m  # pylint: disable=g-import-not-at-top
  config = ml1m.get_config()
  if quick:
    config.data.name = "ml-100k"
  dataset = data_lib.load(config.data)
  repeats = 2 if quick else 5
  rows = []
  speedups = {}
  for clients in ((16, 64) if quick else (64, 256)):
    config.clients_per_round = clients
    sim = simulate.Simulation(config, dataset)
    state = sim.init_state()
    fns = build_loop_fns(sim)
    # Warm-up (compilation) of both paths, then the agreement check.
    vm_params = sim.round(state, 1)[0]["params"]
    lp_params = loop_round(sim, state, 1, fns)
    err = max(float(jnp.abs(a - b).max()) for a, b in
              zip(jax.tree.leaves(vm_params), jax.tree.leaves(lp_params)))
    scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(vm_params))
    agree = err <= 1e-4 * max(1.0, scale)
    if not agree:
      raise AssertionError(f"vmapped and looped rounds disagree: max abs diff {err}")
    t_vmap, _ = _median_time(lambda: sim.round(state, 2)[0]["params"], repeats)
    t_loop, _ = _median_time(lambda: loop_round(sim, state, 2, fns), repeats)
    speedups[clients] = t_loop / t_vmap
    rows.append(f"| {clients} | {t_vmap * 1e3:.0f} | {t_loop * 1e3:.0f} | "
                f"{t_loop / t_vmap:.1f}x | {err:.1e} |")
  name = "ML-100K" if quick else "ML-1M"
  table = "\n".join([
      f"FAIR round on {name}, NeuMF d={config.embed_dim}, capacities "
      f"`{config.capacities}`, {config.local_epochs} local epoch(s), client batch "
      f"{config.client.batch_size}, max {config.client.max_items} items per client; "
      f"median of {repeats} rounds after warm-up.",
      "",
      "| clients/round | vmapped round (ms) | loop of jitted steps (ms) | speedup | "
      "max abs diff of params |",
      "|---|---|---|---|---|",
      *rows,
  ])
  top = max(speedups)
  return BenchResult(table, f"fair_round speedup_vs_loop={speedups[top]:.1f}")
