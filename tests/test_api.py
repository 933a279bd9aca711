"""The library from a notebook: `import fairjax`, algorithm values, evaluation by hand.

docs/design.md's example ("From a notebook") is run here as it is written:
the default run swaps MovieLens-100K for the small test file (same levels,
small shapes); the slow run executes it on MovieLens-100K itself.
"""
import contextlib
import io
import os
import pkgutil
import re
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

import fairjax
from conftest import REPO
from conftest import small_config
from conftest import write_interactions
from fairjax import algorithms
from fairjax import data as data_lib
from fairjax import experiment
from fairjax import metrics
from fairjax import simulate


def design_example():
  """The python block of docs/design.md's "From a notebook" section."""
  with open(os.path.join(REPO, "docs", "design.md")) as f:
    text = f.read()
  section = text.split("### From a notebook", 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
  return write_interactions(str(tmp_path_factory.mktemp("data") / "ratings.csv"))


def _run_example(monkeypatch=None, small=None):
  code = design_example()
  assert 10 <= len(code.strip().splitlines()) <= 20  # about fifteen lines
  if small is not None:
    from configs import ml100k  # pylint: disable=g-import-not-at-top
    # The small file, small shapes, and two of the four levels (1x and the
    # 512x one the example leaves out): half the programs to compile.
    monkeypatch.setattr(ml100k, "get_config", lambda arg=None: small_config(
        small, capacities="1:0.5,512:0.5"))
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "docs/design.md", "exec"), {"__name__": "design_example"})  # pylint: disable=exec-used
  return out.getvalue()


def _check_example_output(text, levels):
  lines = text.splitlines()
  assert [l.split(":")[0] for l in lines[:3]] == ["round 1", "round 2", "round 3"]
  for lv in levels:
    assert re.search(rf"^level/{lv}/hr@10 \d\.\d{{4}}$", text, re.M), text
  # The 512x devices sit out: every round's clients come from the other levels.
  assert all(int(l.split()[2]) > 0 for l in lines[:3])


def test_design_doc_example_runs(monkeypatch, csv):
  _check_example_output(_run_example(monkeypatch, csv), ("1x", "512x"))


@pytest.mark.slow
def test_design_doc_example_runs_on_movielens_100k():
  _check_example_output(_run_example(), ("1x", "8x", "64x", "512x"))


def test_import_fairjax_is_cheap_and_reaches_every_module():
  # In a fresh interpreter: `import fairjax` imports no JAX; attributes load modules.
  code = ("import sys, fairjax; assert 'jax' not in sys.modules, 'jax imported';"
          "fairjax.algorithms.REGISTRY; fairjax.subspace.collapse; print('ok')")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
  # Every module of the package is listed (a new one must be added to MODULES).
  found = {m.name for m in pkgutil.iter_modules(fairjax.__path__)}
  assert found == set(fairjax.MODULES)
  with pytest.raises(AttributeError):
    fairjax.no_such_module  # pylint: disable=pointless-statement


@pytest.fixture(scope="module")
def dataset(csv):
  return data_lib.load(small_config(csv).data)


def test_simulation_takes_an_algorithm_value_a_builder_or_a_name(csv, dataset):
  config = small_config(csv)
  by_name = simulate.Simulation(config, dataset)
  ctx = simulate.context(config, dataset)
  by_value = simulate.Simulation(config, dataset, algorithm=algorithms.hashed.fair(ctx))
  by_builder = simulate.Simulation(config, dataset, algorithm=algorithms.hashed.fair)
  states = []
  for sim in (by_name, by_value, by_builder):
    state, _ = sim.round(sim.init_state(), 1)
    states.append(jax.device_get(state["params"]))
  chex.assert_trees_all_close(states[0], states[1])
  chex.assert_trees_all_close(states[0], states[2])
  # Another name than the config's, and a value of the wrong shape.
  assert simulate.Simulation(config, dataset, algorithm="drop").algorithm.levels[1].trains \
      is False
  three = small_config(csv, capacities="1:0.5,4:0.25,16:0.25")
  wrong = algorithms.hashed.fair(simulate.context(three, data_lib.load(three.data)))
  with pytest.raises(ValueError, match="levels"):
    simulate.Simulation(config, dataset, algorithm=wrong)
  with pytest.raises(TypeError):
    simulate.Simulation(config, dataset, algorithm=3)


def test_build_model_is_the_simulation_model(csv, dataset):
  config = small_config(csv)
  sim = simulate.Simulation(config, dataset)
  a = simulate.build_model(config, dataset.num_items, 5,
                           prior=simulate.prior_knots(config, dataset))
  b = sim._model(5)  # pylint: disable=protected-access
  key = jax.random.PRNGKey(0)
  chex.assert_trees_all_close(a.init(key), b.init(key))
  chex.assert_trees_all_close(sim.context.build_model(5).init(key), b.init(key))


def test_evaluate_by_hand_matches_the_run_and_sees_edited_params(tmp_path, csv, dataset):
  config = small_config(csv, rounds=2, **{"eval.every": 2})
  experiment.run(config, str(tmp_path / "run"), verbose=False)
  logged = metrics.read_metrics(str(tmp_path / "run"))[-1]
  sim = simulate.Simulation(config, dataset)
  state = sim.init_state()
  for rnd in (1, 2):
    state, _ = sim.round(state, rnd)
  mine = sim.evaluate(state)
  for key in ("hr@10", "ndcg@10", "level/1x/hr@10", "level/4x/ndcg@10"):
    assert mine[key] == pytest.approx(logged[key], abs=1e-9), key
  # Any params: with every parameter zeroed all 10 candidates tie, and ties
  # count against the model, so the test item ranks last (rank 9 of 0..9).
  zeroed = jax.tree.map(lambda x: x * 0, {"params": state["params"], "users": state["users"]})
  assert sim.evaluate(zeroed)["ndcg@10"] == pytest.approx(1 / np.log2(11))
  assert mine["ndcg@10"] > 1 / np.log2(11)


def test_progress_bar_stays_after_the_run():
  bar = experiment.progress_bar(range(2), 2, "rounds")
  assert bar.leave is True  # it kept its last metrics on screen (leave=False erased it)
  bar.close()
