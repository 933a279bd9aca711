"""LSH inference: candidates, exact re-scoring, budget calibration."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse import autotune
from sparse import lsh
from sparse import model as model_lib
from sparse import retrieval
from sparse import tables as tables_lib
from sparse import tasks
from sparse.errors import InputError


@pytest.fixture(scope="module")
def trained():
  d = tasks.synthetic_xc(300, input_dim=2000, n_train=1024, n_test=256,
                         seed=0)
  m = model_lib.Model([model_lib.Dense(32),
                       model_lib.Output(300, sparsity=0.1, shared_size=80)],
                      d.input_dim, learning_rate=0.01)
  m.fit(d.x_train, d.y_train, epochs=2, batch_size=128)
  return m, d


@pytest.mark.parametrize("rows", ["centred", "simple"])
def test_budget_of_all_neurons_equals_dense_inference(trained, rows):
  m, d = trained
  dense = m.predict(d.x_test, top_k=5)
  lsh_all = m.predict(d.x_test, top_k=5, mode="lsh",
                      inference=retrieval.InferenceConfig(budget=300,
                                                          rows=rows))
  np.testing.assert_array_equal(lsh_all, dense)
  # The old flag is an alias of mode="lsh".
  m.inference = retrieval.InferenceConfig(budget=300)
  np.testing.assert_array_equal(
      m.predict(d.x_test, top_k=5, sparse_inference=True), dense)
  m.inference = retrieval.InferenceConfig()


def test_recall_grows_with_budget(trained):
  m, d = trained
  cfg = retrieval.InferenceConfig(probes=2, num_tables=16, bucket_size=8,
                                  frequent=4)
  x = d.x_test
  h = np.concatenate([np.asarray(m._last_hidden(ib))   # pylint: disable=protected-access
                      for ib, _ in m._batches(x, 128)])  # pylint: disable=protected-access
  w, b = m._out_weights()  # pylint: disable=protected-access
  index = m._index  # pylint: disable=protected-access
  top1 = m.predict(x, top_k=1)[:, 0]
  recalls = []
  full = index.candidates(jnp.asarray(h), w, b, cfg, 4, 296)
  assert full.shape == (256, 300)
  # Every neuron is a candidate once the budget covers all N.
  assert (np.sort(full, 1) == np.arange(300)).all()
  for budget in (4, 16, 64, 296):
    c = index.candidates(jnp.asarray(h), w, b, cfg, 4, budget)
    # Candidates come best first: a smaller budget keeps a prefix.
    np.testing.assert_array_equal(c, full[:, :4 + budget])
    recalls.append(retrieval.recall_at(c, top1))
  assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
  assert recalls[0] < recalls[-1] == 1.0
  m.inference = cfg._replace(budget=64)
  assert m.lsh_recall(x) == pytest.approx(recalls[2])
  m.inference = retrieval.InferenceConfig()
  # Calibration picks the smallest budget that reaches the target.
  rank = index.rank_by_bias()[top1]
  s = retrieval.choose_setting({4: full[:, 4:]}, top1, rank, recalls[2], 8.0)
  assert s.frequent == 4 and s.budget <= 64 and s.recall >= recalls[2]
  assert retrieval.recall_at(full[:, :4 + s.budget - 1], top1) < recalls[2]


def test_calibration_chooses_the_cheapest_setting():
  # Example i's dense top-1 is neuron i; the frequent set {0, 1} (bias
  # ranks 0 and 1) covers examples 0 and 1; without it, their targets sit
  # deep in the votes.
  target = np.arange(4, dtype=np.int32)
  rank = np.array([0, 1, 5, 6])
  no_freq = np.array([[9, 8, 7, 0], [9, 8, 7, 1], [2, 9, 8, 7],
                      [3, 9, 8, 7]], np.int32)
  with_freq = np.array([[9, 8], [9, 8], [2, 9], [3, 9]], np.int32)
  voted = {0: no_freq, 2: with_freq}
  # Recall 1: F=0 needs budget 4 (cost 4c), F=2 needs budget 1 (2 + c).
  s = retrieval.choose_setting(voted, target, rank, 1.0, candidate_cost=8.0)
  assert (s.frequent, s.budget, s.recall) == (2, 1, 1.0)
  # Recall 0.5: F=0 with budget 1 (cost c) against F=2 with budget 0 (2).
  assert retrieval.choose_setting(voted, target, rank, 0.5, 8.0)[:2] == (2, 0)
  assert retrieval.choose_setting(voted, target, rank, 0.5, 1.0)[:2] == (0, 1)
  # The cost of reading the tables at all tips it back to F=2, budget 0.
  assert retrieval.choose_setting(voted, target, rank, 0.5, 1.0,
                                  vote_cost=5.0)[:2] == (2, 0)
  # A fixed budget: only the frequent count is chosen.
  s = retrieval.choose_setting(voted, target, rank, 1.0, 8.0, budget=1)
  assert (s.frequent, s.budget) == (2, 1)
  # Unreachable: the highest recall wins.
  s = retrieval.choose_setting({0: no_freq[:, :1]}, target, rank, 1.0, 8.0)
  assert s.recall == 0.5 and s.budget == 1


def test_calibrate_sets_the_budget(trained):
  m, d = trained
  m.inference = retrieval.InferenceConfig(max_budget=64)
  out = m.calibrate(d.x_train.take(np.arange(200)), target_recall=0.5)
  assert 0 <= out["budget"] <= 64 and out["recall"] >= 0.5
  assert out["frequent"] in autotune.frequent_sizes(300)
  assert m.lsh_budget() == out["budget"]
  assert m.lsh_setting().frequent == out["frequent"]
  assert m.predict(d.x_test, top_k=3, mode="lsh").shape == (256, 3)
  # A frequent count given is kept.
  m.inference = retrieval.InferenceConfig(max_budget=64, frequent=7)
  assert m.calibrate(d.x_train.take(np.arange(200)))["frequent"] == 7
  m.inference = retrieval.InferenceConfig()


def test_candidates_rank_frequent_then_votes():
  # Two tables, 4 buckets, reservoir 3; neuron 5 shares the query's bucket
  # in both tables, neurons 2 and 3 in one each; 0 is frequent.
  codes = np.array([[0, 0], [1, 1], [2, 3], [3, 2], [1, 3], [2, 2]],
                   np.int32)
  t = tables_lib.build(codes, 4, 3)
  q = np.array([[[2, 2]]], np.int32).transpose(0, 2, 1)   # (1, L=2, P=1)
  c = retrieval.candidates(t, q, np.array([0], np.int32), 3)
  assert c.shape == (1, 4) and c[0, 0] == 0 and c[0, 1] == 5
  assert sorted(c[0, 2:].tolist()) == [2, 3]
  # Past the neurons hit, the rest follow in id order (budget N - F:
  # every neuron).
  np.testing.assert_array_equal(
      retrieval.candidates(t, q, np.array([0], np.int32), 5)[0, 4:], [1, 4])
  # Scores w . h + b = j + (1 for j = 0, 1): the best candidates by score
  # (4 is not one at budget 3).
  w = np.eye(6, 2, dtype=np.float32)
  bias, h = np.arange(6, dtype=np.float32), np.ones((1, 2), np.float32)
  top = retrieval.retrieve_topk(t, q, np.array([0], np.int32), 3, w, bias,
                                h, 2)
  np.testing.assert_array_equal(top, [[5, 3]])
  # Budget 0: only the frequent neurons, scored as a block product.
  freq = np.array([1, 0], np.int32)
  top = retrieval.retrieve_topk(t, q, freq, 0, w, bias, h, 2,
                                retrieval.frequent_block(w, bias, freq))
  np.testing.assert_array_equal(top, [[1, 0]])


def test_block_topk_equals_a_full_sort_across_chunks():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(9, 5)).astype(np.float32)
  w = rng.normal(size=(100, 5)).astype(np.float32)
  bias = rng.normal(size=100).astype(np.float32)
  ids = rng.permutation(100)[:23].astype(np.int32)
  want = ids[np.argsort(-(h @ w[ids].T + bias[ids]), axis=1)]
  block = retrieval.frequent_block(w, bias, ids, chunk=6)   # 4 chunks
  assert block.ids.shape == (4, 6)
  for k in (1, 4, 23, 25):
    got, scores = retrieval.block_topk(h, block, k)
    np.testing.assert_array_equal(got[:, :min(k, 23)], want[:, :k])
    assert (np.diff(scores[:, :min(k, 23)], axis=1) <= 0).all()
    if k > 23:
      assert (got[:, 23:] == -1).all() and np.isneginf(scores[:, 23:]).all()
  empty = retrieval.frequent_block(w, bias, np.zeros(0, np.int32))
  assert (retrieval.block_topk(h, empty, 2)[0] == -1).all()


@pytest.mark.parametrize("family", ["dwta", "srp"])
def test_probe_codes_start_with_the_hash(family):
  fam = lsh.FAMILIES[family]
  params = fam.init(jax.random.key(0), 16, 5, 3)
  x = jax.random.normal(jax.random.key(1), (7, 16))
  codes = np.asarray(lsh.probe_codes(params, x, 2))
  assert codes.shape == (7, 5, 3)
  np.testing.assert_array_equal(codes[..., 0], fam.hash(params, x))
  assert (codes[..., 1:] != codes[..., :1]).all()
  assert codes.min() >= 0 and codes.max() < lsh.num_buckets(params)


def test_bad_inference_input_raises(trained):
  m, d = trained
  with pytest.raises(InputError):
    m.predict(d.x_test, mode="fast")
  with pytest.raises(InputError):
    m.predict(d.x_test, mode="lsh",
              inference=retrieval.InferenceConfig(budget=-1))
  with pytest.raises(InputError):
    m.predict(d.x_test, mode="lsh", inference={"target_recall": 1.5})


def test_experiment_reports_lsh_inference(tmp_path):
  from configs import xc  # pylint: disable=g-import-not-at-top
  from sparse import experiment  # pylint: disable=g-import-not-at-top
  cfg = xc.get_config("n=400,n_train=512")
  cfg.data.n_test, cfg.data.input_dim = 128, 3000
  cfg.epochs, cfg.batch_size, cfg.model.hidden = 1, 128, "16"
  cfg.eval.lsh, cfg.eval.lsh_tables, cfg.eval.lsh_probes = True, 16, 2
  rec = experiment.run(cfg, str(tmp_path))[-1]
  assert {"p@1", "p@1_lsh", "lsh_recall", "lsh_budget",
          "lsh_inference_seconds"} <= set(rec)
  assert 0.0 <= rec["lsh_recall"] <= 1.0 and rec["lsh_budget"] >= 0
  assert rec["lsh_frequent"] in autotune.frequent_sizes(400)
  cfg.eval.lsh_probes = -1
  with pytest.raises(InputError):
    experiment.run(cfg, str(tmp_path))
