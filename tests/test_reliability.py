"""Reliability: crash and resume, dropouts, screening of bad updates, determinism.

The crash tests use the `FAIRJAX_TEST_CRASH_AT` hook (fairjax/checkpoint.py):
the run SIGKILLs itself at a chosen point, so a kill lands exactly where the
test wants it (mid-round, or halfway through writing a checkpoint file).
"""
import glob
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import run_launch
from conftest import small_config
from conftest import SMALL_FLAGS
from conftest import write_interactions
from fairjax import checkpoint
from fairjax import data as data_lib
from fairjax import evaluation
from fairjax import experiment
from fairjax import server as server_lib
from fairjax import simulate
from fairjax.errors import InputError


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def _strip(lines, also=()):
  """Each line without its time/ keys (and `also`), serialised as the writer does."""
  return [json.dumps({k: v for k, v in l.items()
                      if not k.startswith("time/") and k not in also}, sort_keys=True)
          for l in lines]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
  return write_interactions(str(tmp_path_factory.mktemp("data") / "ratings.csv"))


def _args(workdir, csv_path, *extra):
  return (["--config=configs/ml100k.py", f"--workdir={workdir}", "--config.data.name=",
           f"--config.data.path={csv_path}"] + SMALL_FLAGS + list(extra))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, csv):
  """metrics.jsonl lines of an uninterrupted run (4 rounds, checkpoints at 2 and 4)."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  proc = run_launch("launch.train", _args(workdir, csv))
  assert proc.returncode == 0, proc.stderr
  return _lines(workdir)


# ------------------------------------------------------------ crash, resume


def test_sigkill_mid_training_then_rerun_equals_uninterrupted_run(tmp_path, csv, reference):
  workdir = str(tmp_path / "run")
  args = _args(workdir, csv)
  killed = run_launch("launch.train", args, env={checkpoint.CRASH_ENV: "round:3"})
  assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup ran
  assert [l["round"] for l in _lines(workdir)] == [2]
  assert checkpoint.steps(os.path.join(workdir, "checkpoints")) == [2]
  again = run_launch("launch.train", args)  # the same command
  assert again.returncode == 0, again.stderr
  assert "resuming from round 2" in again.stderr
  assert _strip(_lines(workdir)) == _strip(reference)


def test_extending_a_finished_run_keeps_every_evaluation_round_once(tmp_path, csv):
  # A finished 4-round run (evaluations at 2 and 4), extended to 6 rounds.
  workdir = str(tmp_path / "extended")
  experiment.run(small_config(csv), workdir, verbose=False)
  before = _lines(workdir)
  assert [l["round"] for l in before] == [2, 4]
  experiment.run(small_config(csv, rounds=6), workdir, verbose=False)
  lines = _lines(workdir)
  assert [l["round"] for l in lines] == [2, 4, 6]
  assert [l.get("final", False) for l in lines] == [False, False, True]
  # The old evaluations are kept as they were (round 4 loses only its mark).
  assert _strip(lines[:2]) == _strip(before, also=("final",))


# Slow: the mid-training SIGKILL test above covers resuming in the default run.
@pytest.mark.slow
def test_sigkill_during_checkpoint_write_then_rerun_equals_uninterrupted_run(
    tmp_path, csv, reference):
  workdir = str(tmp_path / "run")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  args = _args(workdir, csv)
  # Round 4 is the last: its final line is already written when the write of
  # its checkpoint dies halfway.
  killed = run_launch("launch.train", args, env={checkpoint.CRASH_ENV: "checkpoint:4"})
  assert killed.returncode == -9, killed.stderr
  assert _lines(workdir)[-1].get("final") is True
  assert checkpoint.steps(ckpt_dir) == [2]
  assert glob.glob(os.path.join(ckpt_dir, "ckpt_00000004.npz.tmp-*"))
  again = run_launch("launch.train", args)
  assert again.returncode == 0, again.stderr
  assert "resuming from round 2" in again.stderr
  assert _strip(_lines(workdir)) == _strip(reference)
  assert checkpoint.steps(ckpt_dir) == [2, 4]
  assert not glob.glob(os.path.join(ckpt_dir, "*.tmp-*"))


# ------------------------------------------------------------ determinism


def test_same_seed_gives_identical_metrics_other_seed_differs(tmp_path, csv, reference):
  same = run_launch("launch.train", _args(str(tmp_path / "same"), csv))
  assert same.returncode == 0, same.stderr
  assert _strip(_lines(str(tmp_path / "same"))) == _strip(reference)
  other = str(tmp_path / "other")
  experiment.run(small_config(csv, seed=1), other, verbose=False)
  a, b = _strip(_lines(other)), _strip(reference)
  assert len(a) == len(b) and a != b


# ------------------------------------------------------------ checkpoints


def _tree(x):
  return {"w": np.full((3, 2), x, np.float32), "round": np.asarray(x, np.int32)}


def test_checkpoint_roundtrip_skips_partial_and_damaged_files(tmp_path, capsys):
  d = str(tmp_path / "ckpt")
  checkpoint.save(d, 1, _tree(1), meta={"a": 1})
  checkpoint.save(d, 2, _tree(2), meta={"a": 1})
  # A writer that died mid-write leaves only a temporary file: ignored.
  with open(os.path.join(d, "ckpt_00000003.npz.tmp-999"), "wb") as f:
    f.write(b"PK\x03\x04half")
  step, state = checkpoint.restore_latest(d, _tree(0), {"a": 1})
  assert step == 2
  chex.assert_trees_all_equal(state, _tree(2))
  # A checkpoint damaged after the fact is skipped for the one before it.
  path = os.path.join(d, "ckpt_00000002.npz")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  step, state = checkpoint.restore_latest(d, _tree(0))
  assert step == 1 and "skipping unreadable checkpoint" in capsys.readouterr().err
  chex.assert_trees_all_equal(state, _tree(1))
  checkpoint.save(d, 4, _tree(4), keep=2)
  assert checkpoint.steps(d) == [2, 4] and not glob.glob(os.path.join(d, "*.tmp-*"))


def test_checkpoint_refuses_another_config_but_not_more_rounds(tmp_path, csv):
  d = str(tmp_path / "ckpt")
  config = small_config(csv)
  checkpoint.save(d, 2, _tree(2), meta=checkpoint.config_meta(config))
  longer = small_config(csv, rounds=10, checkpoint_every=5)
  step, _ = checkpoint.restore_latest(d, _tree(0), checkpoint.config_meta(longer))
  assert step == 2
  with pytest.raises(InputError, match="client.lr"):
    checkpoint.restore_latest(d, _tree(0), checkpoint.config_meta(
        small_config(csv, **{"client.lr": 0.01})))
  with pytest.raises(InputError, match="shape"):
    checkpoint.restore_latest(d, {"w": np.zeros((4, 2), np.float32),
                                  "round": np.zeros((), np.int32)})
  assert checkpoint.restore_latest(str(tmp_path / "none"), _tree(0))[0] is None


# ------------------------------------------------------------ dropouts


def _sim(path, **kw):
  config = small_config(path, **kw)
  return simulate.Simulation(config, data_lib.load(config.data))


def test_dropout_loses_updates_and_renormalises_over_survivors(csv):
  """The server step is the survivors' weighted mean of their own updates."""
  sim = _sim(csv, **{"client.dropout": 0.5, "server.optimizer": "sgd", "server.lr": 1.0})
  s0 = sim.init_state()
  batches = sim.sample(1)
  answered = np.concatenate([b.weights > 0 for b in batches])
  assert 0 < answered.sum() < len(answered)
  s1, stats = sim.round(s0, 1)
  assert stats["dropped_clients"] == int((~answered).sum())
  # Each survivor alone: with server SGD at lr 1, its step is its own update.
  solo, weights = [], []
  for lv, b in enumerate(batches):
    for i in np.flatnonzero(b.weights > 0):
      only = [None if c is None else c._replace(weights=np.where(
          (np.arange(len(c.weights)) == i) & (j == lv), c.weights, 0).astype(np.float32))
              for j, c in enumerate(batches)]
      sim.sample = lambda rnd, only=only: only
      solo.append(jax.tree.map(jnp.subtract, sim.round(s0, 1)[0]["params"], s0["params"]))
      weights.append(b.weights[i])
  p = np.asarray(weights) / np.sum(weights)
  expected = jax.tree.map(lambda *ds: sum(pk * d for pk, d in zip(p, ds)), *solo)
  actual = jax.tree.map(jnp.subtract, s1["params"], s0["params"])
  chex.assert_trees_all_close(actual, expected, atol=1e-6)
  # Dropped clients' private embeddings stay as they were.
  for lv, b in enumerate(batches):
    for n in s0["users"]:
      gone = b.users[b.weights == 0]
      np.testing.assert_array_equal(s1["users"][n][gone], s0["users"][n][gone])


def test_round_in_which_nobody_answers_leaves_the_server_state_unchanged(csv):
  sim = _sim(csv, **{"client.dropout": 1.0, "server.optimizer": "adam",
                     "server.lr": 0.01})
  s0 = sim.init_state()
  s1, stats = sim.round(s0, 1)
  for key in ("params", "opt_state", "users", "answered_rounds"):
    chex.assert_trees_all_equal(s1[key], s0[key])
  assert stats["dropped_clients"] == stats["clients"] > 0


def test_dropout_one_finishes_with_the_initial_model_and_says_so(tmp_path, csv):
  config = small_config(csv, **{"client.dropout": 1.0})
  final = experiment.run(config, str(tmp_path / "run"), verbose=False)
  assert final["final"] is True and "initial model" in final["note"]
  assert final["train_loss"] is None and final["bytes_up"] == 0
  assert final["dropped_clients"] == config.clients_per_round * config.eval.every
  dataset = data_lib.load(config.data)
  sim = simulate.Simulation(config, dataset)
  evaluate = evaluation.Evaluator(dataset, config.eval.protocol, config.eval.num_negatives,
                                  seed=config.seed)
  initial = evaluate(sim.score_fns(sim.init_state()), sim.user_level, sim.levels.names)
  for k, v in initial.items():
    assert final[k] == pytest.approx(v, abs=1e-12), k


# ------------------------------------------------------------ screening


def test_screen_rejects_non_finite_and_large_updates_and_clips():
  delta = {"a": jnp.full((4,), 2.0)}  # norm 4
  screen = server_lib.Screen(max_norm=10.0, clip_norm=1.0)
  clipped, ok, norm = server_lib.screen_update(delta, screen)
  assert bool(ok) and float(norm) == pytest.approx(4.0)
  assert float(server_lib.global_norm(clipped)) == pytest.approx(1.0)
  for bad in (jnp.full((4,), jnp.nan), jnp.full((4,), 2e30), jnp.full((4,), 20.0)):
    out, ok, _ = server_lib.screen_update({"a": bad}, screen)
    assert not bool(ok)
    np.testing.assert_array_equal(out["a"], 0.0)
  # A 1e30-scaled update overflows the norm: rejected even with the bound off.
  assert not bool(server_lib.screen_update({"a": jnp.full((4,), 2e30)},
                                           server_lib.Screen())[1])


def test_server_step_never_makes_the_state_non_finite():
  opt = optax.sgd(1.0)
  params = {"a": jnp.ones((3,))}
  state = opt.init(params)
  for total in ({"a": jnp.full((3,), jnp.inf)}, {"a": jnp.array([1.0, jnp.nan, 0.0])},
                {"a": jnp.full((3,), 3e38)}):  # finite, but the step overflows
    new, _ = server_lib.server_step(opt, params, state, total, jnp.float32(0.5), "delta")
    chex.assert_trees_all_equal(new, params)


def _final_state(workdir, config):
  sim = simulate.Simulation(config, data_lib.load(config.data))
  return checkpoint.restore_latest(os.path.join(workdir, "checkpoints"), sim.init_state())[1]


@pytest.fixture(scope="module")
def without_the_poisoned_client(tmp_path_factory, csv):
  """A run in which the client that `client.poison` picks drops out instead."""
  workdir = str(tmp_path_factory.mktemp("drop"))
  config = small_config(csv, **{"client.poison": "drop"})
  experiment.run(config, workdir, verbose=False)
  return _lines(workdir), _final_state(workdir, config)


@pytest.mark.parametrize("poison", ["nan", "huge"])
def test_poisoned_client_is_rejected_and_run_equals_one_without_it(
    tmp_path, csv, poison, without_the_poisoned_client, reference):
  ref_lines, ref_state = without_the_poisoned_client
  workdir = str(tmp_path / poison)
  config = small_config(csv, **{"client.poison": poison})
  experiment.run(config, workdir, verbose=False)
  lines = _lines(workdir)
  every = config.eval.every
  assert [l["rejected_updates"] for l in lines] == [every] * len(lines)
  assert [l["dropped_clients"] for l in lines] == [0] * len(lines)
  assert [l["dropped_clients"] for l in ref_lines] == [every] * len(ref_lines)
  # Everything else, metrics and training loss included, is exactly the same
  # (the poisoned client uploads, so only its bytes_up differ).
  counters = ("rejected_updates", "dropped_clients", "bytes_up")
  assert _strip(lines, counters) == _strip(ref_lines, counters)
  state = _final_state(workdir, config)
  chex.assert_trees_all_equal(state["params"], ref_state["params"])
  chex.assert_trees_all_equal(state["users"], ref_state["users"])
  for leaf in jax.tree.leaves(state):
    assert np.isfinite(np.asarray(leaf)).all()
  # Not vacuous: leaving that client out does change the run.
  assert _strip(ref_lines, counters) != _strip(reference, counters)
