"""HeteroFL and FedHM: their sub-models, aggregation laws and exclusions."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import SGD1
from conftest import make_sim
from conftest import run_rounds
from conftest import small_config
from fairjax import algorithms
from fairjax import experiment
from fairjax import models
from fairjax import server as server_lib


def _sim(path, **kw):
  return make_sim(path, **{**SGD1, **kw})


_run = run_rounds


def _params(kind="neumf", d=8, layers=(16, 8), items=30):
  model = models.make_model(kind, 1, items, d, layers)
  _, rest = models.split_user_params(model.init(jax.random.PRNGKey(3)), kind)
  shapes = {p: (items, d) for p in models.item_table_paths(kind)}
  return rest, shapes


def _dot(a, b):
  return sum(float(jnp.vdot(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------- HeteroFL


@pytest.mark.parametrize("kind", models.MODELS)
def test_column_subspace_is_a_slice_and_its_transpose(kind):
  params, shapes = _params(kind)
  down = algorithms.column_subspace(shapes, 3)
  small = down.collapse(params)
  # The sub-model is exactly what a width-3 model holds.
  want = models.make_model(kind, 1, 30, 8, (16, 8), cols=3).init(jax.random.PRNGKey(0))
  _, want = models.split_user_params(want, kind)
  chex.assert_trees_all_equal_shapes(small, want)
  chex.assert_trees_all_equal(down.collapse(down.expand(small)), small)
  # expand is the transpose of collapse: <collapse x, y> = <x, expand y>.
  y = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)), small)
  np.testing.assert_allclose(_dot(small, y), _dot(params, down.expand(y)), rtol=1e-5)
  for t in shapes:
    table = down.expand(small)[t[0]]["embedding"]
    np.testing.assert_array_equal(table[:, 3:], 0.0)
    np.testing.assert_array_equal(table[:, :3], params[t[0]]["embedding"][:, :3])


def test_heterofl_widths():
  assert [algorithms.heterofl_width(32, c) for c in (1, 3, 4, 32, 33, 512)] == [32, 10, 8, 1,
                                                                                 0, 0]


def test_per_entry_averaging_law():
  """Each entry is the weighted mean over the clients holding it; unheld ones stay."""
  params, shapes = _params("gmf")
  wide, narrow = algorithms.column_subspace(shapes, 8), algorithms.column_subspace(shapes, 2)
  d_wide = jax.tree.map(lambda x: jnp.ones_like(x), wide.collapse(params))
  d_narrow = jax.tree.map(lambda x: 4 * jnp.ones_like(x), narrow.collapse(params))
  w_wide, w_narrow = 3.0, 1.0
  total = jax.tree.map(lambda a, b: w_wide * a + w_narrow * b, wide.expand(d_wide),
                       narrow.expand(d_narrow))
  ones = lambda sub: sub.expand(jax.tree.map(jnp.ones_like, sub.collapse(params)))
  cover = jax.tree.map(lambda a, b: w_wide * a + w_narrow * b, ones(wide), ones(narrow))
  new, _ = server_lib.server_step(optax.sgd(1.0), params, optax.sgd(1.0).init(params),
                                  total, w_wide + w_narrow, "delta", cover)
  moved = new["item_gmf"]["embedding"] - params["item_gmf"]["embedding"]
  np.testing.assert_allclose(moved[:, :2], (3 * 1 + 1 * 4) / 4, rtol=1e-6)  # both hold
  np.testing.assert_allclose(moved[:, 2:], 1.0, rtol=1e-6)  # only the wide client
  # An entry no client holds keeps its value.
  zero = jax.tree.map(jnp.zeros_like, cover)
  same, _ = server_lib.server_step(optax.sgd(1.0), params, optax.sgd(1.0).init(params),
                                   total, 4.0, "delta", zero)
  chex.assert_trees_all_equal(same, params)


def test_heterofl_at_full_capacity_equals_fedavg(small_csv):
  het = _run(_sim(small_csv, algorithm="heterofl", capacities="1:1"), 2)
  fedavg = _run(_sim(small_csv, algorithm="fedavg", capacities="1:1"), 2)
  # Equal up to float rounding: per-entry averaging divides by the covered
  # weight inside the server step, where XLA fuses it its own way.
  chex.assert_trees_all_close(het["params"], fedavg["params"], rtol=1e-6, atol=1e-8)
  chex.assert_trees_all_close(het["users"], fedavg["users"], rtol=1e-6, atol=1e-8)


def test_heterofl_entries_only_full_clients_hold_average_over_them(small_csv):
  """Columns the 4x clients lack move exactly as if only the 1x clients trained.

  `drop` samples the very same 1x clients (same seed, same level order), so
  on those entries one heterofl round equals one drop round.
  """
  het_sim = _sim(small_csv, algorithm="heterofl", capacities="1:0.5,4:0.5")
  drop_sim = _sim(small_csv, algorithm="drop", capacities="1:0.5,4:0.5")
  np.testing.assert_array_equal(het_sim.sample(1)[0].users, drop_sim.sample(1)[0].users)
  s0 = het_sim.init_state()
  het, _ = het_sim.round(s0, 1)
  drop, _ = drop_sim.round(s0, 1)
  width = het_sim.algorithm.levels[1].user_cols
  assert width == 2
  for t in ("item_gmf", "item_mlp"):
    np.testing.assert_allclose(het["params"][t]["embedding"][:, width:],
                               drop["params"][t]["embedding"][:, width:], atol=1e-7)
    assert not np.allclose(het["params"][t]["embedding"][:, :width],
                           drop["params"][t]["embedding"][:, :width])
  # The 4x clients' user rows change only in their first `width` columns.
  users4 = het_sim.sample(1)[1].users
  for n in het["users"]:
    np.testing.assert_array_equal(het["users"][n][users4, width:], s0["users"][n][users4, width:])
    assert not np.allclose(het["users"][n][users4, :width], s0["users"][n][users4, :width])


def test_heterofl_client_holds_its_share(small_csv):
  sim = _sim(small_csv, algorithm="heterofl", capacities="1:0.5,4:0.5")
  full, small = sim.level_bytes(0), sim.level_bytes(1)
  assert small["tables"] <= full["tables"] / 4
  assert small["params"] < full["params"]


# ---------------------------------------------------------------- FedHM


def test_fedhm_ranks():
  # ML-1M: n = 3706, d = 32 -> n d / (n + d) = 31.7.
  assert [algorithms.fedhm_rank(3706, 32, c) for c in (1, 4, 8, 16, 32, 64)] == [31, 7, 3, 1,
                                                                                 0, 0]
  assert algorithms.fedhm_rank(5, 4, 1) == 2
  assert algorithms.fedhm_rank(3, 3, 0.25) == 3  # never above min(n, d)


def test_fedhm_at_full_rank_reproduces_the_table():
  params, shapes = _params("neumf")
  down = algorithms.low_rank_subspace(shapes, 8)
  back = down.expand(down.collapse(params))
  chex.assert_trees_all_close(back, params, atol=1e-5)
  # Below full rank it is the best rank-r approximation (Eckart-Young).
  t = params["item_gmf"]["embedding"]
  s = np.linalg.svd(np.asarray(t), compute_uv=False)
  r3 = algorithms.low_rank_subspace(shapes, 3)
  err = np.linalg.norm(np.asarray(r3.expand(r3.collapse(params))["item_gmf"]["embedding"] - t))
  np.testing.assert_allclose(err, np.sqrt((s[3:] ** 2).sum()), rtol=1e-4)
  small = r3.collapse(params)
  chex.assert_shape([small["item_gmf"]["u"], small["item_gmf"]["v"]], [(30, 3), (8, 3)])


def test_fedhm_at_full_capacity_equals_fedavg(small_csv):
  hm = _run(_sim(small_csv, algorithm="fedhm", capacities="1:1"), 2)
  fedavg = _run(_sim(small_csv, algorithm="fedavg", capacities="1:1"), 2)
  chex.assert_trees_all_equal(hm["params"], fedavg["params"])


def test_fedhm_low_rank_level_trains(small_csv):
  sim = _sim(small_csv, algorithm="fedhm", capacities="1:0.5,2:0.5")
  lp = sim.algorithm.levels[1]
  assert lp.trains and "u" in jax.eval_shape(lp.model.init, jax.random.PRNGKey(0))["item_gmf"]
  assert sim.level_bytes(1)["tables"] <= sim.level_bytes(0)["tables"] / 2
  s0 = sim.init_state()
  s1, stats = sim.round(s0, 1)
  assert np.isfinite(stats["train_loss"])
  for leaf in jax.tree.leaves(s1["params"]):
    assert np.isfinite(np.asarray(leaf)).all()
  # A low-rank client's update is u'v'^T - uv^T: with only rank-r clients, the
  # server table moves by a sum of (rank <= 2r) matrices.
  only = _sim(small_csv, algorithm="fedhm", capacities="2:1", clients_per_round=1)
  a = only.init_state()
  b, _ = only.round(a, 1)
  moved = np.asarray(b["params"]["item_gmf"]["embedding"] - a["params"]["item_gmf"]["embedding"])
  rank = only.algorithm.levels[0].model.module.item_rank
  assert np.linalg.matrix_rank(moved, tol=1e-6) <= 2 * rank


# ------------------------------------------------------ exclusions, protocol


def test_impossible_levels_are_excluded_and_counted(small_csv, tmp_path):
  # d = 8: HeteroFL cannot serve c = 16; FedHM's rank at c = 16 is 0.
  for algorithm in ("heterofl", "fedhm"):
    sim = _sim(small_csv, algorithm=algorithm, capacities="1:0.5,16:0.5")
    assert [lp.trains for lp in sim.algorithm.levels] == [True, False]
    assert sim.per_level[1] == 0
  config = small_config(small_csv, algorithm="heterofl", capacities="1:0.5,16:0.5", rounds=2)
  final = experiment.run(config, str(tmp_path / "het"), verbose=False)
  sim = _sim(small_csv, algorithm="heterofl", capacities="1:0.5,16:0.5")
  assert final["excluded_clients"] == len(sim.level_users[1]) > 0
  assert final["client_param_bytes/16x"] == 0
  assert "level/16x/hr@10" in final
  with open(os.path.join(str(tmp_path / "het"), "metrics.jsonl")) as f:
    assert json.loads(f.readlines()[-1])["final"]


@pytest.mark.parametrize("algorithm", algorithms.all_names())
def test_full_protocol_runs_for_every_algorithm(small_csv, tmp_path, algorithm):
  config = small_config(small_csv, algorithm=algorithm, capacities="1:0.5,4:0.5", rounds=1,
                        **{"eval.protocol": "full", "train.epochs": 1})
  final = experiment.run(config, str(tmp_path / algorithm), verbose=False)
  for key in ("ndcg@20", "recall@20"):
    assert 0.0 <= final[key] <= 1.0, (key, final[key])
  if algorithm in algorithms.federated():
    assert 0.0 <= final["level/4x/ndcg@20"] <= 1.0
    assert final["excluded_clients"] >= 0
