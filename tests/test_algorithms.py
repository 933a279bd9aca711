"""The algorithm registry, the engine's neutrality, FedProx and per-round seeds."""
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO
from conftest import SGD1
from conftest import make_sim
from conftest import run_rounds
from fairjax import algorithms
from fairjax import client as client_lib
from fairjax import models
from fairjax import subspace
from fairjax.errors import InputError


def _source(path):
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def test_engine_names_no_algorithm_and_reads_no_option():
  for path in ("fairjax/engine.py", "fairjax/scoring.py"):
    text = _source(path)
    for name in algorithms.federated():
      assert not re.search(rf"\b{name}\b", text), (path, name)
    for flag in ("config", "aggregate", "inconsistent", "expand_each", "per_entry", "fair."):
      assert flag not in text, (path, flag)


def test_readme_table_lists_exactly_the_registry():
  text = _source("README.md")
  table = text[text.index("<!-- algorithms -->"):text.index("<!-- /algorithms -->")]
  names = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
  assert sorted(names) == sorted(algorithms.all_names())


def test_algorithm_arguments_are_parsed_and_checked():
  assert algorithms.parse("fedprox:mu=0.1") == ("fedprox", {"mu": 0.1})
  assert algorithms.parse("fair") == ("fair", {})
  with pytest.raises(InputError, match="no argument 'nu'"):
    algorithms.check("fedprox:nu=1")
  with pytest.raises(InputError, match="unknown algorithm 'fedperfect'"):
    algorithms.check("fedperfect")
  with pytest.raises(InputError, match="key=value"):
    algorithms.check("fedprox:mu")


# ---------------------------------------------------------------- FedProx


def test_fedprox_with_mu_zero_is_fair(small_csv):
  a = run_rounds(make_sim(small_csv, algorithm="fedprox:mu=0"), 2)
  b = run_rounds(make_sim(small_csv, algorithm="fair"), 2)
  chex.assert_trees_all_equal(a["params"], b["params"])


def test_fedprox_pulls_updates_toward_the_broadcast(small_csv):
  """A larger mu leaves the server closer to where it started (SGD server)."""
  moved = {}
  for mu in (0.0, 50.0):
    # The law is FedProx's; measured with the FAIR defaults of its time
    # (plain expand lift, no prior), where the tiny run moves enough to show it.
    sim = make_sim(small_csv, algorithm=f"fedprox:mu={mu}", **SGD1,
                   **{"client.lr": 0.01, "fair.lift": "expand", "item_prior": "none"})
    s0 = sim.init_state()
    s1, _ = sim.round(s0, 1)
    moved[mu] = sum(float(jnp.sum(jnp.square(a - b))) for a, b in
                    zip(jax.tree.leaves(s1["params"]), jax.tree.leaves(s0["params"])))
  assert 0 < moved[50.0] < 0.5 * moved[0.0]


@pytest.mark.parametrize("c", [1, 4])
def test_sparse_row_step_with_the_proximal_term_equals_the_dense_step(c):
  """The penalty's dense part and the loss's row part make exactly an SGD step."""
  from fairjax.algorithms import fedprox
  spec = {p: s for p, s in subspace.make_spec({("item_gmf", "embedding"): (20, 4)}, c,
                                              3).items()}
  size = spec[("item_gmf", "embedding")].size
  model = models.make_model("gmf", 1, 20, 4, (8,), {"item_gmf": size})
  params = model.init(jax.random.PRNGKey(0))
  anchor = params
  # Move the params off the anchor so the penalty's gradient is not zero.
  params = jax.tree.map(lambda x: x + 0.1 * jnp.cos(jnp.arange(x.size).reshape(x.shape)),
                        params)
  penalty = fedprox.proximal(0.5)
  lr = 0.05
  sparse_cfg = client_lib.LocalConfig("bce", 20, 2, 4, 1, table_lr=lr)
  dense_cfg = sparse_cfg._replace(table_lr=0.0)
  opt = optax.sgd(lr)
  pos = jnp.array([1, 2, 3, 4], jnp.int32)
  negs = jnp.array([[5, 6], [7, 8], [9, 10], [11, 12]], jnp.int32)
  ok = jnp.array([True, True, True, False])
  outs = []
  for cfg in (sparse_cfg, dense_cfg):
    step = client_lib.make_step(model, opt, cfg, penalty)
    state = client_lib.init_opt_state(model, opt, cfg, params)
    (new, _), _ = step(params, state, pos, negs, ok, None, anchor)
    outs.append(new)
  chex.assert_trees_all_close(outs[0], outs[1], atol=1e-6)


def test_fedprox_rejects_a_negative_mu(small_csv):
  with pytest.raises(InputError, match="mu"):
    make_sim(small_csv, algorithm="fedprox:mu=-1")


# --------------------------------------------------------- per-round seeds


def test_reseed_draws_one_hash_per_round_shared_by_every_client(small_csv):
  sim = make_sim(small_csv, algorithm="fair_reseed")
  users = np.arange(5)
  r1, r2 = sim.client_seeds(users, 1), sim.client_seeds(users, 2)
  assert (r1 == r1[0]).all() and (r2 == r2[0]).all()
  assert (r1[0] != r2[0]).all()
  np.testing.assert_array_equal(sim.algorithm.seeds(1), r1[0])


def test_reseed_round_moves_the_server_inside_that_rounds_subspace(small_csv):
  """One compressed level, SGD server: round r's step lies in span(P_{m, seed_r})."""
  sim = make_sim(small_csv, algorithm="fair_reseed", capacities="4:1", **SGD1)
  s0 = sim.init_state()
  s1, _ = sim.round(s0, 1)
  level = sim.algorithm.levels[0]
  for rnd, inside in ((1, True), (2, False)):
    seeds = sim.algorithm.seeds(rnd)
    for t, path in enumerate(sim.shapes):
      sp = level.spec[path]._replace(seed=int(seeds[t]))
      step = s1["params"][path[0]]["embedding"] - s0["params"][path[0]]["embedding"]
      proj = subspace.expand(subspace.collapse(step, sp), sp)
      assert np.allclose(proj, step, atol=1e-6) == inside, (rnd, path)


def test_reseed_at_full_size_is_fair(small_csv):
  """Plain tables do not hash, so a new seed each round changes nothing."""
  a = run_rounds(make_sim(small_csv, algorithm="fair_reseed", capacities="1:1"), 2)
  b = run_rounds(make_sim(small_csv, algorithm="fair", capacities="1:1"), 2)
  chex.assert_trees_all_close(a["params"], b["params"], atol=1e-6)


def test_reseed_refuses_nested_averaging(small_csv):
  with pytest.raises(InputError, match="nested"):
    make_sim(small_csv, algorithm="fair_reseed", **{"fair.aggregate": "nested"})
