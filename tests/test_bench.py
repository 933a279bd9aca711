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
