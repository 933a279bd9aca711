"""The federated benchmark: its loop baseline computes the same round, and the CLI."""
import chex
import jax
import pytest

from conftest import make_sim
from conftest import run_launch
from fairjax import benchmarks


# The loop runs the algorithm's own level functions, so it agrees whatever
# the algorithm: a penalty (fedprox), per-client seeds, column slices.
@pytest.mark.parametrize("algorithm", [
    "fair", "fedprox:mu=0.5", pytest.param("fair_inconsistent", marks=pytest.mark.slow),
    pytest.param("heterofl", marks=pytest.mark.slow),
    pytest.param("fair_reseed", marks=pytest.mark.slow)])
def test_loop_of_jitted_steps_computes_the_vmapped_round(small_csv, algorithm):
  sim = make_sim(small_csv, capacities="1:0.5,4:0.5", algorithm=algorithm)
  state = sim.init_state()
  fns = benchmarks.build_loop_fns(sim)
  vmapped = sim.round(state, 1)[0]["params"]
  looped = benchmarks.loop_round(sim, state, 1, fns)
  chex.assert_trees_all_close(looped, vmapped, atol=1e-5)
  # A different round is a different computation: the check can fail.
  other = benchmarks.loop_round(sim, state, 2, fns)
  diff = jax.tree.map(lambda a, b: float(abs(a - b).max()), other, vmapped)
  assert max(jax.tree.leaves(diff)) > 1e-5


def test_step_floor_counts_the_live_steps(small_csv):
  sim = make_sim(small_csv, capacities="1:0.5,4:0.5")
  state = sim.init_state()
  fl = benchmarks.step_floor(sim, state, benchmarks.build_loop_fns(sim), 1,
                             groups=(1, 4), repeats=2)
  floor, live = fl["floor"], fl["live"]
  cfg = sim.local_cfg
  want = sum(int((-(-b.mask.sum(1) // cfg.batch_size)).sum()) for b in sim.sample(1)
             if b is not None) * cfg.local_epochs
  assert live == want > 0 and floor > 0


def test_bench_cli_runs_on_a_given_file_and_rejects_bad_names(small_csv, tmp_path):
  out = tmp_path / "BENCH.md"
  done = run_launch("launch.bench", ["fair_round", f"--data={small_csv}", f"--output={out}"])
  assert done.returncode == 0, done.stderr[-2000:]
  last = done.stdout.strip().splitlines()[-1]
  assert last.startswith("fair_round speedup_vs_loop=")
  assert float(last.split("=")[1]) > 0
  assert not out.exists()  # a file run is a smoke test: BENCHMARKS.md untouched
  bad = run_launch("launch.bench", ["no_such_bench"])
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error:")
  missing = run_launch("launch.bench", ["fair_round", f"--data={tmp_path / 'none.csv'}"])
  assert missing.returncode == 2, missing.stderr[-2000:]
  assert missing.stderr.strip().splitlines()[-1].startswith("error:")


@pytest.mark.slow
def test_sparse_layer_bench_quick_reports_every_inference_setting():
  # `python -m launch.bench sparse_layer --quick` (about 1.5 minutes).
  done = run_launch("launch.bench", ["sparse_layer", "--quick"])
  assert done.returncode == 0, done.stderr[-2000:]
  out = done.stdout
  last = out.strip().splitlines()[-1]
  keys = [kv.split("=")[0] for kv in last.split()[1:]]
  assert keys == ["train_speedup_20k", "infer_speedup_20k", "lsh_p@1_gap",
                  "lsh_recall_20k", "infer_speedup_5k", "lsh_p@1_gap_5k",
                  "lsh_recall_5k", "p@1_gap"]
  for name in ("calibrated", "votes only (F=0)", "F=32 + votes"):
    assert out.count(f"| {name} |") == 2


def test_goodreads_like_has_the_shape_asked_for():
  import numpy as np  # pylint: disable=g-import-not-at-top
  shape = dict(benchmarks.QUICK_SHAPE)
  ds = benchmarks.goodreads_like(shape)
  train = np.bincount(ds.train_users, minlength=ds.num_users)
  test = np.bincount(ds.test_users, minlength=ds.num_users)
  assert (ds.num_users, ds.num_items) == (shape["num_users"], shape["num_items"])
  assert train.sum() == shape["train"] and test.sum() == shape["test"]
  assert train.min() == shape["min_train"] and train.max() == shape["max_train"]
  for u in range(ds.num_users):  # no test pair is a train pair
    assert not np.intersect1d(ds.train_items[ds.train_users == u],
                              ds.test_items[ds.test_users == u]).size
  # Power-law popularity: the most popular items are far above the median one.
  counts = np.sort(np.bincount(np.concatenate([ds.train_items, ds.test_items]),
                               minlength=ds.num_items))[::-1]
  assert counts[0] > 5 * max(1, counts[len(counts) // 2])


@pytest.mark.slow
def test_heavy_round_bench_quick_reports_every_case(tmp_path):
  # `python -m launch.bench heavy_round --quick` (a few minutes: one process
  # per case, each compiling its round and its evaluation).
  out = tmp_path / "BENCH.md"
  done = run_launch("launch.bench", ["heavy_round", "--quick", f"--output={out}"])
  assert done.returncode == 0, done.stderr[-2000:]
  last = done.stdout.strip().splitlines()[-1]
  pairs = [kv.split("=") for kv in last.split()[1:]]
  assert last.startswith("heavy_round ")
  assert [k for k, _ in pairs] == ["fedavg_s", "fair2_s", "fair256_s", "eval_s", "peak_rss_gb"]
  assert all(float(v) > 0 for _, v in pairs)
  for name in ("fedavg", "FAIR 1x/2x", "FAIR 1x/256x"):
    assert done.stdout.count(f"| {name} |") == 2  # the table and the phases
  assert not out.exists()  # --quick leaves BENCHMARKS.md alone


@pytest.mark.parametrize("catch_up", [False, True])
def test_loop_of_jitted_steps_computes_the_round_with_row_sparse_adam(small_csv, catch_up):
  sim = make_sim(small_csv, capacities="1:0.5,4:0.5",
                 **{"client.optimizer": "adam", "client.lr": 0.01,
                    "client.catch_up": catch_up, "fair.execution": "scan"})
  assert sim.local_cfg.table_opt is not None and sim.local_cfg.table_opt.catch_up == catch_up
  state = sim.init_state()
  vmapped = sim.round(state, 1)[0]["params"]
  looped = benchmarks.loop_round(sim, state, 1, benchmarks.build_loop_fns(sim))
  chex.assert_trees_all_close(looped, vmapped, atol=1e-5)
