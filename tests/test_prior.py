"""The popularity prior, items numbered by popularity, and scoring of excluded devices.

Laws (docs/design.md, "A popularity prior" and "Evaluation"):
* `by_popularity` renumbers items so that training counts never rise with
  the id, and changes no interaction (mapped back through `item_ids`).
* The prior's initial knots fall with the rank, so the prior alone ranks
  items as the popularity baseline does (up to ties of equal counts).
* A model with the prior scores `model without it + prior_at(knots, item)`.
* A level that an algorithm excludes is scored with the popularity ranking;
  the global model's scores are kept under `global_view/`.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from conftest import write_interactions
from fairjax import data as data_lib
from fairjax import models
from fairjax import scoring
from fairjax.errors import InputError


def _pairs(ds):
  return sorted(zip(ds.user_ids[ds.train_users].tolist(), ds.item_ids[ds.train_items].tolist()))


def _test_pairs(ds):
  return sorted(zip(ds.user_ids[ds.test_users].tolist(), ds.item_ids[ds.test_items].tolist()))


def test_by_popularity_numbers_items_by_count_and_keeps_every_interaction(tmp_path):
  path = write_interactions(str(tmp_path / "r.csv"), num_users=30, num_items=25, seed=3)
  plain = data_lib.load({"path": path, "item_order": "file"})
  ranked = data_lib.load({"path": path})
  counts = np.bincount(ranked.train_items, minlength=ranked.num_items)
  assert np.all(np.diff(counts) <= 0)
  # Not the identity on this file (else the test would prove nothing).
  assert np.any(np.diff(np.bincount(plain.train_items, minlength=plain.num_items)) > 0)
  assert _pairs(plain) == _pairs(ranked)
  assert _test_pairs(plain) == _test_pairs(ranked)
  order = np.lexsort((ranked.train_items, ranked.train_users))
  np.testing.assert_array_equal(order, np.arange(len(order)))


def test_unknown_item_order_is_refused(tmp_path):
  path = write_interactions(str(tmp_path / "r.csv"))
  with pytest.raises(InputError, match="data.item_order"):
    data_lib.load({"path": path, "item_order": "shuffled"})


def test_prior_knots_fall_with_rank_and_rank_items_like_popularity():
  rng = np.random.default_rng(0)
  num_items = 300
  # Zipf-like counts, numbered by popularity.
  counts = np.sort((1000 / (1 + np.arange(num_items)) ** 0.9).astype(int) + rng.integers(0, 2, num_items))[::-1]
  train_items = np.repeat(np.arange(num_items), counts)
  knots = np.array(models.popularity_prior(train_items, num_items, 16, num_negatives=4))
  assert knots.shape == (16,)
  assert np.all(np.diff(knots) <= 0)
  prior = np.asarray(models.prior_at(jnp.asarray(knots), num_items, np.arange(num_items)))
  assert np.all(np.diff(prior) <= 1e-6)
  # Knot 0 sits at rank 0: its value is the top item's BCE-optimal logit.
  want0 = np.log((counts[0] + 1) / (counts + 1).mean()) - np.log(4)
  np.testing.assert_allclose(knots[0], want0, rtol=1e-6)
  # Rank order of the prior equals the popularity order wherever counts differ.
  strictly = np.flatnonzero(np.diff(counts) < 0)
  assert np.all(prior[strictly] >= prior[strictly + 1])


def test_prior_refuses_items_not_in_popularity_order():
  with pytest.raises(InputError, match="item_order"):
    models.popularity_prior(np.array([2, 2, 2, 0, 1]), 3, 4)
  with pytest.raises(InputError, match="item_prior_knots"):
    models.popularity_prior(np.array([0, 0, 1]), 2, 1)


@pytest.mark.parametrize("kind", ["gmf", "mlp", "neumf"])
def test_model_with_prior_adds_the_prior_to_the_plain_logit(kind):
  knots = (2.0, 1.0, 0.5, -1.0)
  with_prior = models.make_model(kind, 5, 40, 4, (8,), prior=knots)
  plain = models.make_model(kind, 5, 40, 4, (8,))
  params = with_prior.init(jax.random.PRNGKey(0))
  assert params["prior"].shape == (4,)
  rest = {k: v for k, v in params.items() if k != "prior"}
  users = jnp.array([0, 1, 2, 3, 4, 0])
  items = jnp.array([0, 1, 7, 20, 39, 39])
  got = with_prior.apply(params, users, items)
  want = plain.apply(rest, users, items) + models.prior_at(params["prior"], 40, items)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # The knots are a trained param: the logit depends on them.
  moved = dict(params, prior=params["prior"] + 1.0)
  np.testing.assert_allclose(with_prior.apply(moved, users, items), got + 1.0, rtol=1e-5, atol=1e-5)


def test_popularity_scores_break_ties_and_follow_counts():
  scores = scoring.popularity_scores(np.array([0, 0, 0, 1, 1, 2, 3]), 5, seed=1)
  assert len(set(scores.tolist())) == 5
  assert list(np.argsort(-scores)[:2]) == [0, 1]


@pytest.fixture(scope="module")
def drop_run(tmp_path_factory):
  from fairjax import simulate  # pylint: disable=g-import-not-at-top
  tmp = tmp_path_factory.mktemp("drop")
  path = write_interactions(str(tmp / "r.csv"), seed=2)
  config = small_config(path, algorithm="drop", rounds=2)
  dataset = data_lib.load(config.data)
  sim = simulate.Simulation(config, dataset)
  state = sim.init_state()
  state, _ = sim.round(state, 1)
  return config, dataset, sim, state


def test_excluded_level_is_served_popularity(drop_run):
  config, dataset, sim, state = drop_run
  excluded = [lv for lv, level in enumerate(sim.algorithm.levels) if not level.trains]
  kept = [lv for lv, level in enumerate(sim.algorithm.levels) if level.trains]
  assert excluded and kept
  pop = scoring.popularity_scores(dataset.train_items, dataset.num_items, config.seed)
  users = np.arange(4)
  items = np.tile(np.arange(dataset.num_items)[None, :6], (4, 1))
  memory = sim.score_fns(state)
  global_ = sim.score_fns(state, "global")
  for lv in excluded:
    np.testing.assert_array_equal(memory[lv](users, items), pop[items])
    assert not np.allclose(np.asarray(global_[lv](users, items)), pop[items])
  for lv in kept:
    np.testing.assert_array_equal(np.asarray(memory[lv](users, items)),
                                  np.asarray(global_[lv](users, items)))


def test_evaluation_reports_both_views_only_when_a_level_is_excluded(drop_run, tmp_path):
  from fairjax import evaluation  # pylint: disable=g-import-not-at-top
  from fairjax import simulate  # pylint: disable=g-import-not-at-top
  config, dataset, sim, state = drop_run
  ev = evaluation.Evaluator(dataset, "sampled", 9, config.seed)
  out = sim.evaluate(state, ev)
  assert "global_view/hr@10" in out and "global_view/level/4x/hr@10" in out
  # The 1x level trains: both views score it alike.
  assert out["level/1x/hr@10"] == out["global_view/level/1x/hr@10"]
  fair = simulate.Simulation(small_config(config.data.path, rounds=2), dataset)
  assert not any(k.startswith("global_view/") for k in fair.evaluate(fair.init_state(), ev))
