"""Deployment over Flower: the strategy against the simulation engine, in one process.

The fast tests drive `fairjax.flower`'s Strategy and ClientApp with an
in-process Grid (messages handed to the ClientApp directly): the same
messages and code a real deployment runs, without SuperLink processes.
The slow test (`make test-all`) starts a real SuperLink and SuperNodes.
"""
import itertools
import json
import os

import chex
import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import run_launch
from conftest import small_config
from conftest import write_interactions

flwr = pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402  pylint: disable=g-import-not-at-top
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402  pylint: disable=g-import-not-at-top

from fairjax import data as data_lib  # noqa: E402  pylint: disable=g-import-not-at-top
from fairjax import deployment  # noqa: E402  pylint: disable=g-import-not-at-top
from fairjax import evaluation  # noqa: E402  pylint: disable=g-import-not-at-top
from fairjax import flower  # noqa: E402  pylint: disable=g-import-not-at-top
from fairjax import simulate  # noqa: E402  pylint: disable=g-import-not-at-top

# Two levels (one hashed), a few clients, 2 devices per level.
BASE = {"capacities": "1:0.5,4:0.5", "clients_per_round": 8, "model": "neumf",
        "rounds": 3, "eval.every": 3, "eval.protocol": "both"}


class LocalGrid:
  """A Grid whose devices are ClientApp calls in this process (each with its own Context)."""

  def __init__(self, node_configs, fail=()):
    self.contexts = {}
    self.fail = set(fail)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    for i, nc in enumerate(node_configs):
      node_id = 1000 + i
      self.contexts[node_id] = Context(run_id=1, node_id=node_id, node_config=nc,
                                       state=RecordDict(), run_config={})
    self._ids = itertools.count(1)
    self._out = {}

  def get_node_ids(self):
    return [n for n in self.contexts if n not in self.fail]

  def push_messages(self, messages):
    ids = []
    for msg in messages:
      mid = f"m{next(self._ids)}"
      msg.metadata.__dict__["_message_id"] = mid
      node = msg.metadata.dst_node_id
      if node in self.fail:
        ids.append(mid)
        continue
      reply = flower.client_app(msg, self.contexts[node])
      self._out[mid] = reply
      ids.append(mid)
    return ids

  def pull_messages(self, message_ids):
    return [self._out.pop(m) for m in list(message_ids) if m in self._out]


def _setup(tmp_path, nodes=4, **overrides):
  data = write_interactions(str(tmp_path / "ratings.csv"), seed=5)
  config = small_config(data, **{**BASE, **overrides})
  dataset = data_lib.load(config.data)
  evaluator = evaluation.Evaluator(dataset, config.eval.protocol, config.eval.num_negatives,
                                   seed=config.seed)
  parts = deployment.write_partitions(config, dataset, evaluator, nodes,
                                      str(tmp_path / "partitions"))
  node_configs = [{"capacity": c, "partition": p} for c, p in parts]
  return config, dataset, evaluator, node_configs


def _strategy(config, grid, log=None):
  strategy = flower.FairjaxStrategy(config, log=log or (lambda line: None))
  strategy.aggregate_query(flower.exchange(grid, strategy.configure_query(
      grid.get_node_ids()), 60))
  return strategy


def _train_round(strategy, grid, rnd):
  msgs = strategy.configure_train(rnd, None, None, grid)
  return strategy.aggregate_train(rnd, flower.exchange(grid, msgs, 60))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("algorithm", ["fair", "heterofl"] + [
    pytest.param(a, marks=pytest.mark.slow) for a in
    ("fair_inconsistent", "fedavg", "fedhm", "fedprox:mu=0.1", "fair_reseed", "drop")])
def test_strategy_round_matches_the_engine(algorithm, tmp_path):
  """configure_train/aggregate_train give the simulation's server params (<= 1e-5), 3 rounds."""
  config, dataset, _, node_configs = _setup(tmp_path, algorithm=algorithm)
  grid = LocalGrid(node_configs)
  strategy = _strategy(config, grid)
  sim = simulate.Simulation(config, dataset)
  state = sim.init_state()
  chex.assert_trees_all_close(strategy.server.params, state["params"], atol=0)
  for rnd in (1, 2, 3):
    _, train_metrics = _train_round(strategy, grid, rnd)
    state, stats = sim.round(state, rnd)
    assert _max_diff(strategy.server.params, state["params"]) <= 1e-5, rnd
    for k in ("dropped_clients", "rejected_updates", "clients", "bytes_down", "bytes_up"):
      assert train_metrics[k] == stats[k], k
    np.testing.assert_allclose(train_metrics["train_loss"], stats["train_loss"], rtol=1e-5)
  # Every device kept exactly the user rows the simulation keeps.
  for node_id, ctx in grid.contexts.items():
    rows = flower.from_record(ctx.state["rows"])
    if "pending" in ctx.state:  # the last round's rows, committed by the next message
      flower._commit(ctx, {"commit": np.asarray(strategy.server.take_commit(node_id))})  # pylint: disable=protected-access
      rows = flower.from_record(ctx.state["rows"])
    users = flower.from_record(ctx.state["meta"])["users"]
    for n, r in rows.items():
      np.testing.assert_allclose(r, np.asarray(state["users"][n])[users], atol=1e-5)
  # Evaluation on the devices gives the simulation's metrics.
  msgs = strategy.configure_evaluate(3, None, None, grid)
  strategy.aggregate_evaluate(3, flower.exchange(grid, msgs, 60))
  got = strategy.last_eval
  from fairjax import evaluation as ev  # pylint: disable=g-import-not-at-top
  want = ev.Evaluator(dataset, "both", config.eval.num_negatives, seed=config.seed)(
      sim.score_fns(state), sim.user_level, sim.levels.names)
  assert got.keys() == want.keys()
  for k, w in want.items():
    if np.isnan(w):
      assert np.isnan(got[k]), k
    else:
      np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-6, err_msg=k)


def test_bad_replies_are_rejected_and_change_nothing(tmp_path):
  """Devices replying NaN, a wrong shape, or another level's arrays: one log line each,
  naming the device; the server model is what it is when they do not answer at all;
  the run goes on."""
  # Every client takes part, so every device is asked.
  config, _, _, node_configs = _setup(tmp_path, nodes=6, clients_per_round=40)
  # Levels alternate over devices: 0, 2, 4 are 1x; 1, 3, 5 are 4x.
  faults = {1: "level", 2: "nan", 3: "shape"}
  assert [nc["capacity"] for nc in node_configs] == [1.0, 4.0] * 3
  faulty = [dict(nc, fault=faults[i]) if i in faults else nc
            for i, nc in enumerate(node_configs)]
  lines = []
  grid = LocalGrid(faulty)
  strategy = _strategy(config, grid, log=lines.append)
  _, m = _train_round(strategy, grid, 1)
  silent_grid = LocalGrid(node_configs)
  reference = _strategy(config, silent_grid)
  silent_grid.fail.update(1000 + i for i in faults)  # joined, then never answer
  _train_round(reference, silent_grid, 1)
  flat = lambda s: np.concatenate([np.ravel(x) for x in jax.tree.leaves(s.server.params)])
  np.testing.assert_array_equal(flat(strategy), flat(reference))
  assert not np.array_equal(flat(strategy), flat(_strategy(config, LocalGrid(node_configs))))
  for i, fault in faults.items():
    named = [l for l in lines if l.startswith(f"node {1000 + i} ")]
    assert len(named) == 1, (fault, lines)
    assert "rejected" in named[0], named
  assert m["rejected_updates"] > 0 and m["dropped_clients"] == 0
  # The run goes on: the next round trains, the faulty devices are still asked.
  _, m2 = _train_round(strategy, grid, 2)
  assert m2["clients"] > 0 and len(lines) == 6


# ------------------------------------------------------- a real deployment

SLOW = {"capacities": "1:0.5,4:0.5", "clients_per_round": 6, "model": "gmf", "rounds": 2,
        "eval.every": 2, "checkpoint_every": 1}


def _flags(path, overrides):
  base = small_config(path, **overrides)
  out = [f"--config.data.path={path}", "--config.data.name="]
  for key in ("embed_dim", "clients_per_round", "rounds", "capacities", "model",
              "checkpoint_every"):
    out.append(f"--config.{key}={base[key]}")
  out += ["--config.mlp_layers=(16, 8)", f"--config.eval.every={base.eval.every}",
          f"--config.eval.num_negatives={base.eval.num_negatives}",
          f"--config.client.batch_size={base.client.batch_size}",
          f"--config.client.max_items={base.client.max_items}"]
  return out


@pytest.mark.slow
def test_real_deployment_matches_launch_train(tmp_path):
  """SuperLink + 2 SuperNodes, 2 rounds: launch.train's params after round 1 (<= 1e-5)
  and its metrics after round 2; no process left behind."""
  from fairjax import checkpoint  # pylint: disable=g-import-not-at-top
  from fairjax import metrics  # pylint: disable=g-import-not-at-top
  path = write_interactions(str(tmp_path / "ratings.csv"), seed=5)
  flags = ["--config=configs/ml100k.py"] + _flags(path, SLOW)
  dep = run_launch("launch.deploy", flags + [f"--workdir={tmp_path / 'dep'}", "--nodes=2",
                                            "--save_params"], timeout=1500)
  assert dep.returncode == 0, dep.stderr[-3000:]
  with open(tmp_path / "dep" / "pids.json") as f:
    pids = json.load(f)
  for pid in pids.values():  # every process group the launcher started is gone
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read(
    ).rsplit(")", 1)[1].split()[0]
  sim_run = run_launch("launch.train", flags + [f"--workdir={tmp_path / 'sim'}"])
  assert sim_run.returncode == 0, sim_run.stderr[-3000:]
  config = small_config(path, **SLOW)
  sim = simulate.Simulation(config, data_lib.load(config.data))
  state = checkpoint.restore(str(tmp_path / "sim" / "checkpoints"), 1, sim.init_state())
  with np.load(tmp_path / "dep" / "params" / "round-1.npz") as z:
    got = deployment.unflatten(dict(z), state["params"])
  assert _max_diff(got, state["params"]) <= 1e-5
  want = metrics.read_metrics(str(tmp_path / "sim"))[-1]
  have = metrics.read_metrics(str(tmp_path / "dep"))[-1]
  for k, w in want.items():
    if k.startswith("time/"):
      continue
    if isinstance(w, float):
      np.testing.assert_allclose(have[k], w, rtol=1e-4, atol=1e-6, err_msg=k)
    else:
      assert have[k] == w, k


def test_deploy_refuses_fewer_devices_than_levels(tmp_path):
  path = write_interactions(str(tmp_path / "ratings.csv"), seed=5)
  out = run_launch("launch.deploy", ["--config=configs/ml100k.py", f"--workdir={tmp_path}/w",
                                     "--nodes=1", "--config.data.name=",
                                     f"--config.data.path={path}",
                                     "--config.capacities=1:0.5,4:0.5"])
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "--nodes=1" in lines[0], out.stderr[-2000:]


@pytest.mark.slow
def test_a_killed_device_is_dropped_and_a_restarted_one_rejoins(tmp_path):
  """SuperNode 1 SIGKILLed during round 2 and restarted after it: round 2 completes
  with its clients dropped, the run finishes, the device trains again later."""
  path = write_interactions(str(tmp_path / "ratings.csv"), seed=5)
  work = tmp_path / "dep"
  out = run_launch("launch.deploy", ["--config=configs/ml100k.py"] + _flags(
      path, dict(SLOW, rounds=5, **{"eval.every": 5})) + [
          f"--workdir={work}", "--nodes=2", "--kill=1:2:2"], timeout=1500)
  assert out.returncode == 0, out.stderr[-3000:]
  rounds = [json.loads(l) for l in open(work / "rounds.jsonl")]
  assert rounds[1]["dropped_nodes"] == 1 and rounds[1]["dropped_clients"] > 0
  assert rounds[0]["dropped_clients"] == 0
  later = [r for r in rounds[2:] if r["devices"] == 2]
  assert later and later[-1]["dropped_clients"] == 0, rounds
  with open(work / "logs" / "run.log") as f:
    assert " joined" in f.read()
  from fairjax import metrics  # pylint: disable=g-import-not-at-top
  assert metrics.read_metrics(str(work))[-1]["final"]
