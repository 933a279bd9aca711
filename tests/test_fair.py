"""FAIR's federated laws on a tiny dataset (Simulation driven directly)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np

from conftest import SGD1
from conftest import make_sim
from conftest import run_rounds
from fairjax import subspace

# The paper code's weight averaging needs the plain expand lift.
WEIGHTS = {"fair.aggregate": "weights", "fair.lift": "expand"}


_sim = make_sim
_run = run_rounds


def test_fair_at_full_capacity_equals_fedavg(small_csv):
  fair = _run(_sim(small_csv, algorithm="fair", capacities="1:1"), 2)
  fedavg = _run(_sim(small_csv, algorithm="fedavg", capacities="1:1"), 2)
  chex.assert_trees_all_equal(fair["params"], fedavg["params"])
  chex.assert_trees_all_equal(fair["users"], fedavg["users"])


def test_fair_differs_from_fedavg_when_compressed(small_csv):
  fair = _run(_sim(small_csv, algorithm="fair", capacities="4:1"), 1)
  fedavg = _run(_sim(small_csv, algorithm="fedavg", capacities="4:1"), 1)
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), fair["params"], fedavg["params"])
  assert max(jax.tree.leaves(diff)) > 1e-4


def test_vmap_and_scan_execution_agree(small_csv):
  a = _run(_sim(small_csv, **{"fair.execution": "vmap"}), 2)
  b = _run(_sim(small_csv, **{"fair.execution": "scan"}), 2)
  chex.assert_trees_all_close(a["params"], b["params"], atol=1e-5)
  chex.assert_trees_all_close(a["users"], b["users"], atol=1e-5)


def _outside(sim, lv, params):
  """The component of the item tables outside level lv's subspace."""
  sub = subspace.subspace(sim.algorithm.levels[lv].spec)
  proj = sub.expand(sub.collapse(params))
  return {p[0]: params[p[0]]["embedding"] - proj[p[0]]["embedding"] for p in sim.shapes}


def test_delta_averaging_keeps_what_lies_outside_the_subspace(small_csv):
  """Only 4x clients: delta mode leaves (I - P)theta alone, weights mode zeroes it."""
  sim = _sim(small_csv, capacities="4:1", **{"fair.aggregate": "delta"}, **SGD1)
  s0 = sim.init_state()
  s1, _ = sim.round(s0, 1)
  chex.assert_trees_all_close(_outside(sim, 0, s1["params"]), _outside(sim, 0, s0["params"]),
                              atol=1e-6)
  sim_w = _sim(small_csv, capacities="4:1", **WEIGHTS, **SGD1)
  s1w, _ = sim_w.round(sim_w.init_state(), 1)
  for v in jax.tree.leaves(_outside(sim_w, 0, s1w["params"])):
    np.testing.assert_allclose(v, 0.0, atol=1e-6)
  # With every client at 1x the two modes coincide (SGD, lr 1).
  a = _run(_sim(small_csv, capacities="1:1", **{"fair.aggregate": "delta"}, **SGD1), 1)
  b = _run(_sim(small_csv, capacities="1:1", **WEIGHTS, **SGD1), 1)
  chex.assert_trees_all_close(a["params"], b["params"], atol=1e-5)


def test_client_table_bytes_shrink_by_the_compression(small_csv):
  sim = _sim(small_csv, capacities="1:0.25,2:0.25,4:0.25,8:0.25")
  full = sim.level_bytes(0)["tables"]
  for lv, c in enumerate(sim.levels.compressions):
    assert sim.level_bytes(lv)["tables"] <= full / c
    assert sim.level_bytes(lv)["params"] > sim.level_bytes(lv)["tables"]


def test_sampling_is_without_replacement_and_stratified(small_csv):
  sim = _sim(small_csv, capacities="1:0.5,4:0.5", clients_per_round=10)
  batches = sim.sample(3)
  for lv, b in enumerate(batches):
    assert len(set(b.users.tolist())) == len(b.users) == sim.per_level[lv]
    assert (sim.user_level[b.users] == lv).all()
  again = sim.sample(3)
  np.testing.assert_array_equal(batches[0].users, again[0].users)


def test_everyone_dropping_out_leaves_the_server_unchanged(small_csv):
  sim = _sim(small_csv, **{"client.dropout": 1.0})
  s0 = sim.init_state()
  s1, stats = sim.round(s0, 1)
  chex.assert_trees_all_equal(s1["params"], s0["params"])
  chex.assert_trees_all_equal(s1["users"], s0["users"])
  assert stats["dropped_clients"] == stats["clients"]


def test_smallest_and_drop_plans(small_csv):
  small = _sim(small_csv, algorithm="smallest", capacities="1:0.5,4:0.5")
  sizes = {lp.spec[p].size for lp in small.algorithm.levels for p in small.shapes}
  assert len(sizes) == 1 and None not in sizes
  drop = _sim(small_csv, algorithm="drop", capacities="1:0.5,4:0.5")
  assert [lp.trains for lp in drop.algorithm.levels] == [True, False]
  assert drop.per_level[1] == 0


def test_inconsistent_clients_hash_differently(small_csv):
  sim = _sim(small_csv, algorithm="fair_inconsistent", capacities="4:1")
  seeds = sim.client_seeds(np.array([0, 1, 2]))
  assert len(set(seeds[:, 0].tolist())) == 3
  state = _run(sim, 1)
  for leaf in jax.tree.leaves(state["params"]):
    assert np.isfinite(np.asarray(leaf)).all()


def test_nested_average_equals_delta_when_every_client_shares_a_subspace(small_csv):
  # SGD: Adam would blow float-rounding differences up to full steps.
  a = _run(_sim(small_csv, capacities="4:1", **{"fair.aggregate": "nested"}, **SGD1), 2)
  b = _run(_sim(small_csv, capacities="4:1", **{"fair.aggregate": "delta"}, **SGD1), 2)
  chex.assert_trees_all_close(a["params"], b["params"], atol=1e-6)


def test_nested_average_divides_each_layer_by_the_clients_that_hold_it():
  """Two nested levels: the fine layer is averaged over the big clients only."""
  from fairjax import server as server_lib
  spec_small = subspace.TableSpec(6, 4, 3, 4)
  spec_big = subspace.TableSpec(6, 4, 3, 8)
  proj = lambda sp: (lambda t: {"t": subspace.expand(subspace.collapse(t["t"], sp), sp)})
  rng = np.random.default_rng(0)
  big = {"t": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)}
  small_w = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
  small = {"t": subspace.expand(small_w, spec_small)}
  # Level totals already weighted: 3 units of weight at the big level, 1 small.
  t_big = proj(spec_big)({"t": 3.0 * big["t"]})
  g = server_lib.nested_average([small, t_big], [1.0, 3.0], [proj(spec_small), proj(spec_big)])
  p_small = proj(spec_small)
  coarse = (p_small(small)["t"] + p_small(t_big)["t"]) / 4.0
  fine = (t_big["t"] - p_small(t_big)["t"]) / 3.0
  np.testing.assert_allclose(g["t"], coarse + fine, atol=1e-5)


def _tables(params, sim):
  return {p[0]: params[p[0]]["embedding"] for p in sim.shapes}


def test_adjoint_lift_moves_the_server_by_the_transpose_of_collapse(small_csv):
  """One compressed level, SGD lr 1: expand adds P avg(delta), adjoint adds P D^-1 avg(delta)."""
  kw = dict(capacities="4:1", **SGD1)
  sim_e = _sim(small_csv, **kw, **{"fair.lift": "expand"})
  sim_a = _sim(small_csv, **kw, **{"fair.lift": "adjoint"})
  s0 = sim_e.init_state()
  s_e, _ = sim_e.round(s0, 1)
  s_a, _ = sim_a.round(s0, 1)
  sp = sim_e.algorithm.levels[0].spec
  for path, table_spec in sp.items():
    name = path[0]
    before, exp, adj = (s[name]["embedding"] for s in (s0["params"], s_e["params"],
                                                       s_a["params"]))
    # The clients' average delta, read back from the expand run.
    avg = subspace.collapse(exp - before, table_spec)
    np.testing.assert_allclose(exp - before, subspace.expand(avg, table_spec), atol=1e-6)
    np.testing.assert_allclose(adj - before, subspace.adjoint(avg, table_spec), atol=1e-6)
    assert float(jnp.abs(adj - before).max()) < float(jnp.abs(exp - before).max())
  # Dense layers and the private user rows do not depend on the lift.
  dense = lambda s: {k: v for k, v in s["params"].items() if k not in _tables(s["params"], sim_e)}
  chex.assert_trees_all_close(dense(s_e), dense(s_a), atol=1e-6)
  chex.assert_trees_all_close(s_e["users"], s_a["users"], atol=1e-6)


def test_adjoint_lift_is_expand_at_full_capacity(small_csv):
  a = _run(_sim(small_csv, capacities="1:1", **{"fair.lift": "adjoint"}), 2)
  b = _run(_sim(small_csv, capacities="1:1", **{"fair.lift": "expand"}), 2)
  chex.assert_trees_all_equal(a["params"], b["params"])


def test_level_weight_scales_client_weights_by_a_power_of_c(small_csv):
  base = _sim(small_csv, capacities="1:0.5,4:0.5")
  tilted = _sim(small_csv, capacities="1:0.5,4:0.5", **{"fair.level_weight": 1.0})
  for lv, (b, t) in enumerate(zip(base.sample(3), tilted.sample(3))):
    c = base.levels.compressions[lv]
    np.testing.assert_array_equal(b.users, t.users)
    np.testing.assert_allclose(t.weights, b.weights / c)
    np.testing.assert_allclose(b.weights, b.mask.sum(1))


def test_federated_user_rows_add_their_bytes_and_change_no_number(small_csv):
  private = _sim(small_csv)
  shared = _sim(small_csv, **{"fair.federate_user": True})
  s0 = private.init_state()
  a, stats_a = private.round(s0, 1)
  b, stats_b = shared.round(s0, 1)
  chex.assert_trees_all_equal(a["params"], b["params"])
  chex.assert_trees_all_equal(a["users"], b["users"])
  row = {lv: private.level_bytes(lv)["user"] for lv in range(len(private.levels.compressions))}
  assert all(v > 0 for v in row.values())
  sent = sum(k * row[lv] for lv, k in enumerate(private.per_level))
  assert stats_b["bytes_down"] - stats_a["bytes_down"] == sent
  assert stats_b["bytes_up"] - stats_a["bytes_up"] == sent  # nobody dropped out


def test_lift_leaves_heterofl_column_slices_alone(small_csv):
  kw = dict(algorithm="heterofl", capacities="1:0.5,4:0.5")
  a = _run(_sim(small_csv, **kw, **{"fair.lift": "adjoint"}), 1)
  b = _run(_sim(small_csv, **kw, **{"fair.lift": "expand"}), 1)
  chex.assert_trees_all_equal(a["params"], b["params"])


def test_lift_view_scores_with_what_the_client_holds(small_csv):
  """fair.view=lift: clients train and are scored on rescale(collapse(theta))."""
  kw = dict(capacities="4:1", **{"fair.lift": "isometric"})
  mean = _sim(small_csv, **kw)
  lifted = _sim(small_csv, **kw, **{"fair.view": "lift"})
  s0 = mean.init_state()
  plan = lifted.algorithm.levels[0]
  held = subspace.rescale_map(plan.spec, 0.5)(subspace.subspace(plan.spec).collapse(s0["params"]))
  u, items = jnp.array([0, 3]), jnp.array([[1, 2, 5], [0, 7, 9]])
  emb = {n: {"embedding": e} for n, e in s0["users"].items()}
  want = plan.eval_model.apply({**held, **emb}, jnp.broadcast_to(u[:, None], items.shape), items)
  np.testing.assert_allclose(lifted.score_fns(s0)[0](u, items), want, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(mean.score_fns(s0)[0](u, items) - want).max()) > 1e-6
  # Training starts from that view too, so the round differs from view=mean.
  a, _ = mean.round(s0, 1)
  b, _ = lifted.round(s0, 1)
  diff = jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a["params"], b["params"])
  assert max(jax.tree.leaves(diff)) > 1e-6
