"""Benchmarks of the federated simulation, run by `python -m launch.bench NAME`.

Each benchmark returns a `BenchResult`: a Markdown table and a one-line
summary. Ratios are measured side by side in one process; absolute times
are context only.
"""
import functools
import os
import statistics
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import client as client_lib
from fairjax import data as data_lib
from fairjax import engine as engine_lib
from fairjax import models
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
  its own data are skipped, since they would change nothing. It runs the
  algorithm's own level functions (broadcast, held, contribute, lift) and
  aggregator, with the engine's randomness, screening and weighting, so it
  cannot drift from the engine whatever the algorithm.

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
  algorithm = sim.algorithm
  key = jax.random.fold_in(jax.random.PRNGKey(sim.config.seed), rnd)
  seeds = jnp.asarray(algorithm.seeds(rnd))
  totals, weights = {}, {}
  for lv, batch in enumerate(sim.sample(rnd)):
    if batch is None:
      continue
    level = algorithm.levels[lv]
    cols = slice(None, level.user_cols)
    shared = fns["broadcast", lv](params, seeds)
    rngs = jax.random.split(jax.random.fold_in(key, lv), len(batch.users))
    level_sum, level_weight = None, 0.0
    for k, u in enumerate(batch.users):
      sd = jnp.asarray(batch.seeds[k])
      start = fns["held", lv](params, shared, sd)
      row = {n: {"embedding": users[n][u][None, cols]} for n in users}
      p = models.merge_user_params(row, start)
      anchor = p if level.penalty else None
      opt_state = fns["opt_init", lv](p)
      items, mask = jnp.asarray(batch.items[k]), jnp.asarray(batch.mask[k])
      live_steps = int(client_lib.live_step_count(batch.mask[k], cfg))
      tseeds = level.model_seeds(sim.table_names, sd)
      for ekey in client_lib.epoch_keys(rngs[k], cfg.local_epochs):
        pos, negs, valid = fns["batches"](ekey, items, mask)
        for t in range(live_steps):
          (p, opt_state), _ = fns["step", lv](p, opt_state, pos[t], negs[t], valid[t],
                                              tseeds, anchor)
      out, w = fns["finish", lv](p, start, sd, batch.weights[k])
      level_sum = out if level_sum is None else fns["add"](level_sum, out)
      level_weight = level_weight + w
    totals[lv], weights[lv] = fns["lift", lv](level_sum, seeds), level_weight
  new_params, _ = sim.engine.server_step(params, state["opt_state"], totals, weights)
  return new_params


def build_loop_fns(sim):
  """The jitted pieces of `loop_round`, built once per simulation."""
  kind = sim.kind
  screen = sim.screen
  cfg = sim.local_cfg
  fns = {"add": jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b)),
         "batches": jax.jit(lambda k, i, m: client_lib.epoch_batches(k, i, m, cfg))}
  for lv, level in enumerate(sim.algorithm.levels):
    if not level.trains:
      continue

    def finish(p, start, seeds, weight, level=level):
      _, new_shared = models.split_user_params(p, kind)
      out, ok, _ = engine_lib.settle(level, screen, start, new_shared, seeds)
      w = weight * ok
      return jax.tree.map(lambda d: d * w, out), w

    fns["finish", lv] = jax.jit(finish)
    fns["step", lv] = jax.jit(client_lib.make_step(level.model, sim.local_opt, cfg,
                                                   level.penalty))
    fns["opt_init", lv] = jax.jit(functools.partial(client_lib.init_opt_state, level.model,
                                                    sim.local_opt, cfg))
    fns["broadcast", lv] = jax.jit(level.broadcast)
    fns["held", lv] = jax.jit(level.held)
    fns["lift", lv] = jax.jit(level.lift)
  return fns


def step_floor(sim, state, fns, rnd, groups=(1, 8, 64), repeats=20):
  """The round's client-steps, and their time at each batching of one step.

  Each level's minibatch step is timed vmapped over each of `groups`
  identical clients (params donated, as in the round's loop). The round's
  live client-steps (steps that hold data, every epoch) at the fastest of
  those per-client times is the floor: what these steps cost batched in
  groups of those sizes, with no padding, no per-client work and no
  dispatch. `padded` counts what the vmapped round runs instead: each of
  its groups (`Simulation.group_size`, clients ordered by size) runs as
  many steps as its longest client.

  Returns:
    dict: "floor" (seconds), "live" and "padded" (client-steps), and
    "per_step" (group size -> seconds per live client-step at that size).
  """
  cfg = sim.local_cfg
  per_group = dict.fromkeys(groups, 0.0)
  floor, live, padded = 0.0, 0, 0
  k1, k2 = jax.random.split(jax.random.PRNGKey(rnd))
  for lv, batch in enumerate(sim.sample(rnd)):
    if batch is None:
      continue
    counts = np.asarray(client_lib.live_step_count(batch.mask, cfg))
    steps = int(counts.sum()) * cfg.local_epochs
    size = sim.group_size(lv)
    padded += sum(int(counts[i:i + size].max()) * len(counts[i:i + size])
                  for i in range(0, len(counts), size)) * cfg.local_epochs
    level = sim.algorithm.levels[lv]
    step = jax.jit(jax.vmap(client_lib.make_step(level.model, sim.local_opt, cfg,
                                                 level.penalty)), donate_argnums=(0, 1))
    row = {n: {"embedding": state["users"][n][:1, :level.user_cols]} for n in state["users"]}
    seeds = jnp.asarray(batch.seeds[0])
    held = fns["held", lv](state["params"], fns["broadcast", lv](state["params"], seeds),
                           seeds)
    p = models.merge_user_params(row, held)
    times = {}
    for group in groups:
      carry = jax.tree.map(lambda x, g=group: jnp.repeat(x[None], g, 0),
                           (p, fns["opt_init", lv](p)))
      pos = jax.random.randint(k1, (group, cfg.batch_size), 0, cfg.num_items)
      negs = jax.random.randint(k2, (group, cfg.batch_size, cfg.num_negatives), 0,
                                cfg.num_items)
      ok = jnp.ones((group, cfg.batch_size), bool)
      anchor = (jax.tree.map(lambda x, g=group: jnp.repeat(x[None], g, 0), p)
                if level.penalty else None)
      runs = []
      for _ in range(repeats + 1):
        start = time.perf_counter()
        carry, _ = step(*carry, pos, negs, ok, None, anchor)
        jax.block_until_ready(carry)
        runs.append(time.perf_counter() - start)
      times[group] = statistics.median(runs[1:]) / group
      per_group[group] += steps * times[group]
    floor += steps * min(times.values())
    live += steps
  return {"floor": floor, "live": live, "padded": padded,
          "per_step": {g: t / max(live, 1) for g, t in per_group.items()}}


def fair_round(quick=False, data_path=""):
  """A FAIR round under vmap against a Python loop of jitted client steps.

  ML-1M (ML-100K with quick=True, or the interactions file `data_path`),
  NeuMF, wide capacity distribution, 64 and 256 clients per round (16 and 64
  with quick=True), then GMF. Both paths compute the same round; the
  resulting server params are checked to agree.
  """
  from configs import ml1m  # pylint: disable=g-import-not-at-top
  config = ml1m.get_config()
  if data_path:
    config.data.name, config.data.path = "", data_path
  elif quick:
    config.data.name = "ml-100k"
  dataset = data_lib.load(config.data)
  # A user's file is a smoke test (one small case, nothing written): quick timing.
  quick = quick or bool(data_path)
  repeats = 2 if quick else 5
  groups = (1, 8) if quick else (1, 8, 64)
  rows = []
  speedups = {}
  # The default model first (the summary line); GMF, whose step is a few
  # dot products, shows what batching gains when dispatch dominates a step.
  cases = [("neumf", c) for c in ((16, 64) if quick else (64, 256))]
  cases += [("gmf", c) for c in ((64,) if quick else (256,))]
  if data_path:  # a smoke test on the user's file: one small case
    cases = [("neumf", 16)]
  for kind, clients in cases:
    config.model = kind
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
    fl = step_floor(sim, state, fns, 2, groups=groups, repeats=5 if quick else 20)
    speedups[kind, clients] = t_loop / t_vmap
    per_step = " / ".join(f"{fl['per_step'][g] * 1e3:.2f}" for g in groups)
    rows.append(f"| {kind} | {clients} | {fl['live']} | {fl['padded']} | {t_vmap * 1e3:.0f} | "
                f"{t_loop * 1e3:.0f} | {t_loop / t_vmap:.1f}x | "
                f"{t_loop / fl['live'] * 1e3:.2f} | {per_step} | {fl['floor'] * 1e3:.0f} | "
                f"{t_loop / fl['floor']:.1f}x | {err:.1e} |")
  name = os.path.basename(data_path) if data_path else "ML-100K" if quick else "ML-1M"
  table = "\n".join([
      f"FAIR round on {name}, d={config.embed_dim}, MLP tower "
      f"{tuple(config.mlp_layers)}, capacities "
      f"`{config.capacities}`, {config.local_epochs} local epoch(s), client batch "
      f"{config.client.batch_size}, max {config.client.max_items} items per client; "
      f"median of {repeats} rounds after warm-up. Live client-steps hold data; "
      "the vmapped round runs the padded ones (a group runs to its longest "
      "client). Step time: one minibatch step, per client, vmapped over "
      f"{' / '.join(map(str, groups))} identical clients. Floor: the live "
      "client-steps at the fastest of those times (`step_floor`); loop / floor "
      "bounds what batching the steps in groups of those sizes can reach.",
      "",
      "| model | clients/round | live client-steps | padded client-steps | vmapped round "
      "(ms) | loop of jitted steps (ms) | speedup | loop per live step (ms) | step time "
      f"per client at {' / '.join(map(str, groups))} (ms) | floor (ms) | loop / floor | "
      "max abs diff of params |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      *rows,
  ])
  top = max(c for k, c in speedups if k == "neumf")
  return BenchResult(table, f"fair_round speedup_vs_loop={speedups['neumf', top]:.1f}")


# --------------------------------------------------------------- fair_scaling
# Round time against the number of devices. XLA reads the forced host-device
# count once, at startup, so every device count runs in its own interpreter.

SCALING_DEVICES = (1, 2, 4)


def _scaling_config(quick):
  from configs import ml100k  # pylint: disable=g-import-not-at-top
  config = ml100k.get_config()
  config.clients_per_round = 32 if quick else 128
  if quick:
    config.client.max_items = 64
  return config


def scaling_worker(num_devices, quick, params_path):
  """One device count's measurement (run in a fresh process by `fair_scaling`).

  Args:
    num_devices: the mesh size (`config.num_devices`).
    quick: smaller sizes.
    params_path: where to save the server params after the first round.

  Returns:
    A dict: median and all round times (seconds), compile round (seconds),
    average busy cores, devices, clients per level.
  """
  config = _scaling_config(quick)
  config.num_devices = num_devices
  dataset = data_lib.load(config.data)
  sim = simulate.Simulation(config, dataset)
  state = sim.init_state()
  start = time.perf_counter()
  state = sim.round(state, 1)[0]  # compiles every level's program
  jax.block_until_ready(state["params"])
  warmup = time.perf_counter() - start
  # Compared after one round: later rounds of FedAdam (the default server)
  # magnify rounding-level differences in entries whose update is ~0.
  leaves = jax.tree.leaves(jax.device_get(state["params"]))
  np.savez(params_path, *[np.asarray(x) for x in leaves])
  times = []
  cpu_start = time.process_time()
  for rnd in range(2, (3 if quick else 6) + 1):
    start = time.perf_counter()
    state = sim.round(state, rnd)[0]
    jax.block_until_ready(state["params"])
    times.append(time.perf_counter() - start)
  # Cores kept busy on average: how much of the machine the rounds used.
  cores = (time.process_time() - cpu_start) / sum(times)
  return {"devices": int(sim.mesh.devices.size), "median": statistics.median(times),
          "times": times, "warmup": warmup, "cores": cores,
          "per_level": [int(k) for k in sim.per_level]}


def fair_scaling(quick=False):
  """A FAIR round's time on 1, 2 and 4 (forced host CPU) devices.

  Each device count runs in its own process, with
  `XLA_FLAGS=--xla_force_host_platform_device_count=N` and
  `config.num_devices=N`; the same rounds are run in each, and the server
  params they end with are checked to agree.
  """
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  results, params = {}, {}
  load = []
  with tempfile.TemporaryDirectory() as tmp:
    for n in SCALING_DEVICES:
      path = os.path.join(tmp, f"params{n}.npz")
      code = ("import json; from fairjax import benchmarks; "
              f"print('RESULT ' + json.dumps(benchmarks.scaling_worker({n}, {quick}, {path!r})))")
      flags_ = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
      env = dict(os.environ, XLA_FLAGS=flags_.strip(), JAX_PLATFORMS="cpu")
      proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env,
                            capture_output=True, text=True, check=False)
      if proc.returncode != 0:
        raise RuntimeError(f"fair_scaling worker for {n} devices failed:\n{proc.stderr[-3000:]}")
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
      results[n] = json.loads(line[len("RESULT "):])
      with np.load(path) as z:
        params[n] = [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]
      load.append(os.getloadavg()[0])
  config = _scaling_config(quick)
  base = results[SCALING_DEVICES[0]]["median"]
  rows = []
  for n in SCALING_DEVICES:
    r = results[n]
    err = max(float(np.abs(a - b).max()) for a, b in zip(params[SCALING_DEVICES[0]], params[n]))
    per_device = [-(-k // n) for k in r["per_level"]]
    rows.append(f"| {n} | {r['median'] * 1e3:.0f} | {base / r['median']:.2f}x | "
                f"{r['cores']:.2f} | {', '.join(map(str, per_device))} | "
                f"{r['warmup']:.1f} | {err:.1e} |")
  repeats = len(results[SCALING_DEVICES[0]]["times"])
  table = "\n".join([
      f"FAIR round on ML-100K, NeuMF d={config.embed_dim}, capacities `{config.capacities}`, "
      f"{config.clients_per_round} clients per round (per level: "
      f"{', '.join(map(str, results[1]['per_level']))}), {config.local_epochs} local "
      f"epoch(s), client batch {config.client.batch_size}, max {config.client.max_items} "
      f"items per client; CPU devices forced with "
      f"`XLA_FLAGS=--xla_force_host_platform_device_count=N`, one process per N; median of "
      f"{repeats} rounds after a warm-up round; 1-minute load average during the run "
      f"{min(load):.1f} to {max(load):.1f}.",
      "",
      "| devices | round (ms) | speedup vs 1 | busy cores (CPU time / wall time) | "
      "clients per device, per level | "
      "warm-up round incl. compile (s) | max abs diff of params after round 1 vs 1 "
      "device |",
      "|---|---|---|---|---|---|---|",
      *rows,
      "",
      f"Params after one round differ from one device's by float rounding (another "
      f"summation order); with the `{config.server.optimizer}` server that rounding can "
      "show: Adam's first step moves an entry by about lr * g / (|g| + 1e-8), so "
      "entries whose aggregate g is near 1e-8 are sensitive to it. With FedAvg's "
      "server, 1 and 4 devices give the same metrics (`tests/test_sharding.py`).",
      "",
      f"What limits scaling here: this machine has {os.cpu_count()} cores, shared with "
      "other jobs (see the load average); the rounds kept "
      f"{min(r['cores'] for r in results.values()):.2f} to "
      f"{max(r['cores'] for r in results.values()):.2f} cores busy on average, whatever "
      "N. Forced host devices are not extra hardware, only extra XLA CPU devices on "
      "the same cores: splitting a level's clients over N of them can only use cores "
      "that one device leaves idle, never more than the machine has. Each extra "
      "device adds a cross-device sum of every level's expanded update, zero clients "
      "that pad each level to a multiple of N (none here), and a dispatch. Devices "
      "that bring their own compute (GPUs, TPU cores, hosts) divide the clients' work "
      "with the same program.",
  ])
  top = SCALING_DEVICES[-1]
  return BenchResult(table, f"fair_scaling speedup_{top}_devices="
                            f"{base / results[top]['median']:.2f}")
