"""The factorised grid scoring of the full protocol against the model's own scores."""
import numpy as np
import pytest

from conftest import make_sim


@pytest.mark.parametrize("algorithm,model", [
    ("fair", "neumf"), ("fedhm", "neumf"), ("fair_inconsistent", "neumf"),
    pytest.param("fedavg", "gmf", marks=pytest.mark.slow),
    pytest.param("fair", "mlp", marks=pytest.mark.slow),
    pytest.param("heterofl", "neumf", marks=pytest.mark.slow)])
def test_grid_scores_are_the_models_scores(small_csv, algorithm, model):
  sim = make_sim(small_csv, capacities="1:0.5,4:0.5", algorithm=algorithm, model=model)
  state, _ = sim.round(sim.init_state(), 1)
  items = np.arange(sim.dataset.num_items, dtype=np.int32)
  for lv, fn in enumerate(sim.score_fns(state)):
    users = np.flatnonzero(sim.user_level == lv)[:6]
    pairwise = np.asarray(fn(users, np.broadcast_to(items, (len(users), len(items)))))
    grid = np.asarray(fn.grid(users, items))
    np.testing.assert_allclose(grid, pairwise, rtol=1e-5, atol=1e-6)
    assert np.ptp(pairwise) > 1e-4  # the scores differ between pairs
