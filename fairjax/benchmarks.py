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
      p = fns["flush", lv](p, opt_state, items.shape[-1])  # catch-up Adam's owed steps
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
                                                    sim.local_opt, cfg, penalty=level.penalty))
    fns["flush", lv] = jax.jit(
        lambda p, s, n, level=level: client_lib.finish(level.model, cfg, p, s, n, level.penalty),
        static_argnums=2)
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


# ---------------------------------------------------------------- heavy_round
# Rounds of configs/heavy.py on a synthetic set of the shape of the FAIR
# paper's Goodreads_100 (its adjacency files are not public here).

GOODREADS_100 = {"num_users": 99, "num_items": 359_014, "train": 482_745, "test": 206_869,
                 "min_train": 3_387, "max_train": 27_218}
QUICK_SHAPE = {"num_users": 12, "num_items": 20_000, "train": 30_000, "test": 12_000,
               "min_train": 1_000, "max_train": 6_000}


def goodreads_like(shape=None, alpha=0.6, seed=0):
  """A synthetic `Dataset` of the Goodreads_100 shape (or `shape`).

  Users' training counts run geometrically from `min_train` to `max_train`
  (a power of the rank chosen so that they sum to `train`); the test counts
  are proportional and sum to `test`. Each user's items are drawn without
  replacement with probability proportional to `(rank + 1)^-alpha` over a
  random ranking of the items (power-law popularity), then split at random.
  """
  s = dict(GOODREADS_100 if shape is None else shape)
  users, items = s["num_users"], s["num_items"]
  rng = np.random.default_rng(seed)
  x = np.linspace(0.0, 1.0, users)
  ratio = s["max_train"] / s["min_train"]
  counts = lambda p: s["min_train"] * ratio ** (x ** p)
  lo, hi = 1e-3, 1e3
  for _ in range(200):  # the power whose counts sum to the total
    mid = (lo * hi) ** 0.5
    lo, hi = (mid, hi) if counts(mid).sum() > s["train"] else (lo, mid)
  train = np.floor(counts(mid)).astype(np.int64)
  train[0], train[-1] = s["min_train"], s["max_train"]
  rest = s["train"] - train.sum()
  train[1:-1] += rest // (users - 2)
  train[1:1 + rest % (users - 2)] += 1
  test = np.floor(train * s["test"] / s["train"]).astype(np.int64)
  test[:s["test"] - test.sum()] += 1
  log_p = -alpha * np.log(np.arange(items) + 1.0)
  rank = rng.permutation(items)
  parts = {"tu": [], "ti": [], "su": [], "si": []}
  for u in range(users):
    n = train[u] + test[u]
    # Gumbel top-n: n draws without replacement, proportional to p.
    pick = rank[np.argpartition(-(log_p + rng.gumbel(size=items)), n)[:n]]
    rng.shuffle(pick)
    parts["tu"].append(np.full(train[u], u))
    parts["ti"].append(np.sort(pick[:train[u]]))
    parts["su"].append(np.full(test[u], u))
    parts["si"].append(np.sort(pick[train[u]:]))
  cat = {k: np.concatenate(v).astype(np.int32) for k, v in parts.items()}
  return data_lib.Dataset(users, items, cat["tu"], cat["ti"], cat["su"], cat["si"],
                          np.arange(users).astype(object), np.arange(items).astype(object))


HEAVY_CASES = {  # name -> config overrides of configs/heavy.py
    "fedavg": {"algorithm": "fedavg"},
    "fair2": {"capacities": "1:0.5,2:0.5"},
    "fair256": {},  # the config's default capacities, 1:0.5,256:0.5
}


def heavy_config(case, quick=False):
  from configs import heavy  # pylint: disable=g-import-not-at-top
  config = heavy.get_config()
  for key, value in HEAVY_CASES[case].items():
    config[key] = value
  if quick:
    config.clients_per_round = 4
    config.client.max_items = 1024
  return config


def _peak_rss_gb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 2**20
  return float("nan")


def _timed(fn):
  """(result, wall seconds, CPU seconds of every thread of the process)."""
  wall, cpu = time.perf_counter(), time.process_time()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - wall, time.process_time() - cpu


def _local_only(sim, lv):
  """The level's program without aggregation: local training, each client's params reduced to a scalar."""
  level = sim.algorithm.levels[lv]
  update = sim.engine.local_update(level)
  cfg, size = sim.local_cfg, sim.group_size(lv)

  def program(params, seeds, user_rows, items, mask, rngs, client_seeds):
    shared = level.broadcast(params, seeds)

    def group(xs):
      user, it, mk, rng, sd = xs
      steps = client_lib.live_step_count(mk, cfg).max()

      def one(x):
        u, i, m, r, s = x
        new, _, loss = update(level.held(params, shared, s), u, i, m, r,
                              level.model_seeds(sim.table_names, s), steps)
        # One entry per leaf: the whole update ran (its loop carries every
        # entry), and nothing of table size leaves the client.
        return sum(x.ravel()[0] for x in jax.tree.leaves(new)) + loss
      per = jax.vmap(one)(xs)
      return (per.sum(),), per

    return engine_lib.map_groups(group, (user_rows, items, mask, rngs, client_seeds), size)[0]
  return jax.jit(program)


def heavy_worker(case, quick, rounds):
  """One case of `heavy_round` (run in a fresh process: its own peak memory)."""
  from fairjax import evaluation  # pylint: disable=g-import-not-at-top
  config = heavy_config(case, quick)
  dataset = goodreads_like(QUICK_SHAPE if quick else None)
  sim = simulate.Simulation(config, dataset)
  state = sim.init_state()
  state, compile_wall, _ = _timed(lambda: sim.round(state, 1)[0])
  walls, cpus = [], []
  for rnd in range(2, rounds + 2):
    state, wall, cpu = _timed(lambda rnd=rnd: sim.round(state, rnd)[0])
    walls.append(wall)
    cpus.append(cpu)
  evaluate = evaluation.Evaluator(dataset, "full")
  ev = lambda: evaluate(sim.score_fns(state), sim.user_level, sim.levels.names)
  first, eval_first, _ = _timed(ev)
  eval_runs = [_timed(ev)[1:] for _ in range(2)]
  peak = _peak_rss_gb()  # before the phase timings below, which the run never does

  # Phases, each its own jitted program on round 2's clients.
  phases = {"broadcast": [], "local training": [], "aggregation": [], "server step": []}
  batches = sim.sample(2)
  params, seeds = state["params"], jnp.asarray(sim.algorithm.seeds(2))
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  for _ in range(3):
    totals, weights = {}, {}
    t_b = t_l = t_all = 0.0
    for lv, batch in enumerate(batches):
      if batch is None:
        continue
      level = sim.algorithm.levels[lv]
      cols = slice(None, level.user_cols)
      rows = {n: {"embedding": state["users"][n][batch.users][:, None, cols]}
              for n in state["users"]}
      rngs = jax.random.split(jax.random.fold_in(key, lv), len(batch.users))
      t_b += _timed(lambda level=level: jax.jit(level.broadcast)(params, seeds))[1]
      local = _local_only(sim, lv)
      args = (rows, batch.items, batch.mask, rngs, batch.seeds)
      jax.block_until_ready(local(params, seeds, *args))  # compiled outside the timing
      t_l += _timed(lambda: local(params, seeds, *args))[1]
      out, t, _ = _timed(lambda lv=lv, batch=batch, args=args: sim.engine.program(lv)(
          (params, seeds), args[0], batch.items, batch.mask, batch.weights, args[3],
          batch.seeds, batch.poison))
      t_all += t
      totals[lv], weights[lv] = out[0], out[1]
    t_s = _timed(lambda: sim.engine.server_step(params, state["opt_state"], totals,
                                                 weights))[1]
    phases["broadcast"].append(t_b)
    phases["local training"].append(t_l - t_b)
    phases["aggregation"].append(t_all - t_l)
    phases["server step"].append(t_s)
  phases = {k: statistics.median(v) for k, v in phases.items()}

  # The floor: the round's live client-steps at the time of the step's
  # forward and backward pass alone (the model's arithmetic on the batch's
  # rows; no optimizer, no table update), batched over 1 and 8 clients.
  cfg = sim.local_cfg
  live = sum(int(np.asarray(client_lib.live_step_count(b.mask, cfg)).sum())
             for b in batches if b is not None) * cfg.local_epochs
  floor_step = _step_floor_time(sim, state)
  return {"case": case, "compile": compile_wall, "walls": walls, "cpus": cpus,
          "eval_first": eval_first, "eval_walls": [w for w, _ in eval_runs],
          "eval_cpus": [c for _, c in eval_runs], "ndcg": first["ndcg@20"],
          "peak_rss_gb": peak, "phases": phases, "live_steps": live,
          "floor_step": floor_step, "per_level": [int(k) for k in sim.per_level],
          "group_sizes": [sim.group_size(lv) for lv in range(len(sim.per_level))],
          "load": os.getloadavg()[0]}


def _step_floor_time(sim, state, repeats=30):
  """Seconds of one client's forward+backward pass on a minibatch, at 1 and 8 clients batched."""
  cfg = sim.local_cfg
  level = sim.algorithm.levels[0]
  model = level.model
  loss_fn = models.get_loss(cfg.loss)
  row = {n: {"embedding": state["users"][n][:1, :level.user_cols]} for n in state["users"]}
  seeds = jnp.asarray(sim.algorithm.seeds(0))
  p = models.merge_user_params(row, level.held(state["params"], level.broadcast(
      state["params"], seeds), seeds))
  names = [n for n in model.tables if n in models.ITEM_TABLES]
  tables = {n: p[n] for n in names}
  rest = {k: v for k, v in p.items() if k not in names}

  def grads(rest, pos, negs):
    both = jnp.concatenate([pos[:, None], negs], axis=1)
    users = jnp.zeros_like(both)
    zeros = {n: {"rows": jnp.zeros(both.shape + (model.tables[n].cols,))}
             for n in model.tables}

    def objective(rest, rows):
      logits = model.module.apply({"params": {**rest, **tables}, "perturbations": rows},
                                  users, both)
      return loss_fn(logits[:, 0], logits[:, 1:])
    return jax.grad(objective, argnums=(0, 1))(rest, zeros)

  best = float("inf")
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  for group in (1, 8):
    pos = jax.random.randint(k1, (group, cfg.batch_size), 0, cfg.num_items)
    negs = jax.random.randint(k2, (group, cfg.batch_size, cfg.num_negatives), 0,
                              cfg.num_items)
    many = jax.tree.map(lambda x, g=group: jnp.repeat(x[None], g, 0), rest)
    fn = jax.jit(jax.vmap(grads))
    jax.block_until_ready(fn(many, pos, negs))
    runs = [_timed(lambda: fn(many, pos, negs))[1] for _ in range(repeats)]
    best = min(best, statistics.median(runs) / group)
  return best


def heavy_round(quick=False):
  """configs/heavy.py rounds on the Goodreads_100 shape: fedavg, FAIR 1x/2x, FAIR 1x/256x.

  Each case runs in its own process (its own peak resident memory): one
  warm-up round (compilation), then `rounds` timed rounds (the median is
  the marginal seconds per round), three full-protocol evaluations (the
  first compiles), and the round's phases timed as separate programs.
  """
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rounds = 2 if quick else 5
  results = {}
  load = [os.getloadavg()[0]]
  for case in HEAVY_CASES:
    code = ("import json; from fairjax import benchmarks; print('RESULT ' + json.dumps("
            f"benchmarks.heavy_worker({case!r}, {quick}, {rounds})))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True,
                          text=True, check=False, env=dict(os.environ))
    if proc.returncode != 0:
      raise RuntimeError(f"heavy_round worker {case} failed:\n{proc.stderr[-3000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    results[case] = json.loads(line[len("RESULT "):])
    load.append(results[case]["load"])
  shape = QUICK_SHAPE if quick else GOODREADS_100
  config = heavy_config("fair256", quick)
  med = lambda xs: statistics.median(xs)
  names = {"fedavg": "fedavg", "fair2": "FAIR 1x/2x", "fair256": "FAIR 1x/256x"}
  rows, phase_rows = [], []
  for case, r in results.items():
    floor = r["live_steps"] * r["floor_step"]
    rows.append(f"| {names[case]} | {', '.join(map(str, r['per_level']))} | "
                f"{med(r['walls']):.2f} | {med(r['cpus']):.2f} | {r['live_steps']} | "
                f"{floor:.2f} | {med(r['walls']) / floor:.1f}x | {med(r['eval_walls']):.2f} | "
                f"{med(r['eval_cpus']):.2f} | {r['peak_rss_gb']:.2f} | {r['compile']:.0f} | "
                f"{r['ndcg']:.4f} |")
    ph = r["phases"]
    phase_rows.append(f"| {names[case]} | " + " | ".join(
        f"{ph[k]:.3f}" for k in ("broadcast", "local training", "aggregation",
                                 "server step")) + f" | {med(r['eval_walls']):.2f} |")
  table = "\n".join([
      f"`configs/heavy.py` ({config.clients_per_round} clients per round, "
      f"{config.local_epochs} local epochs, batch {config.client.batch_size}, at most "
      f"{config.client.max_items} items per client, NeuMF d={config.embed_dim}, client "
      f"{config.client.optimizer} (row-sparse: `client.sparse_update`), server "
      f"{config.server.optimizer}) on a synthetic set of the Goodreads_100 shape "
      f"({shape['num_users']} users, {shape['num_items']:,} items, {shape['train']:,} "
      f"training and {shape['test']:,} test interactions, {shape['min_train']:,} to "
      f"{shape['max_train']:,} training items per user, power-law popularity; "
      "`benchmarks.goodreads_like`). One process per case; median of "
      f"{rounds} rounds after a warm-up round; evaluation: the full protocol over "
      "every item for every user, median of 2 after a warm-up; 1-minute load average "
      f"{min(load):.1f} to {max(load):.1f} during the run (the machine's {os.cpu_count()} "
      "cores are shared: wall times grow with the load, CPU times much less).",
      "",
      "| case | clients per level | round wall (s) | round CPU (s) | live client-steps | "
      "floor (s) | round / floor | evaluation wall (s) | evaluation CPU (s) | peak RSS (GB) | "
      "warm-up round incl. compile (s) | NDCG@20 after the rounds |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      *rows,
      "",
      "Floor: the round's live client-steps (minibatches that hold data, every "
      "epoch) at the time of one step's forward and backward pass alone (the "
      "model's arithmetic on the batch's 1 + K rows per example, no optimizer, no "
      "table update; the fastest of 1 or 8 clients batched): what the round's "
      "arithmetic costs with nothing else.",
      "",
      "Phases of one round (seconds, each timed as its own program on the same "
      "clients; local training = the level's program with each client's result "
      "reduced to a scalar, minus the broadcast; aggregation = the whole program "
      "minus that: deltas, screening, the weighted sum, the lift):",
      "",
      "| case | broadcast | local training | aggregation | server step | evaluation |",
      "|---|---|---|---|---|---|",
      *phase_rows,
  ])
  r = results
  summary = (f"heavy_round fedavg_s={med(r['fedavg']['walls']):.2f} "
             f"fair2_s={med(r['fair2']['walls']):.2f} "
             f"fair256_s={med(r['fair256']['walls']):.2f} "
             f"eval_s={max(med(x['eval_walls']) for x in r.values()):.2f} "
             f"peak_rss_gb={max(x['peak_rss_gb'] for x in r.values()):.2f}")
  return BenchResult(table, summary)
