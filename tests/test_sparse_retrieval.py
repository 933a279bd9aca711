"""LSH inference: candidates, exact re-scoring, budget calibration."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
  full = index.candidates(jnp.asarray(h), w, b, cfg, 300)
  for budget in (4, 16, 64, 300):
    c = index.candidates(jnp.asarray(h), w, b, cfg, budget)
    # Candidates come best first: a smaller budget keeps a prefix.
    np.testing.assert_array_equal(c, full[:, :budget])
    recalls.append(retrieval.recall_at(c, top1))
  assert all(a <= b for a, b in zip(recalls, recalls[1:])), recalls
  assert recalls[0] < recalls[-1]
  m.inference = cfg._replace(budget=64)
  assert m.lsh_recall(x) == pytest.approx(recalls[2])
  m.inference = retrieval.InferenceConfig()
  # Calibration picks the smallest budget that reaches the target.
  b = retrieval.calibrate_budget(full, top1, recalls[2])
  assert b <= 64 and retrieval.recall_at(full[:, :b], top1) >= recalls[2]
  assert retrieval.recall_at(full[:, :b - 1], top1) < recalls[2]


def test_calibrate_sets_the_budget(trained):
  m, d = trained
  m.inference = retrieval.InferenceConfig(max_budget=64)
  out = m.calibrate(d.x_train.take(np.arange(200)), target_recall=0.5)
  assert 1 <= out["budget"] <= 64
  assert m.lsh_budget() == out["budget"]
  assert m.predict(d.x_test, top_k=3, mode="lsh").shape == (256, 3)
  m.inference = retrieval.InferenceConfig()


def test_candidates_rank_frequent_then_votes():
  # Two tables, 4 buckets, reservoir 3; neuron 5 shares the query's bucket
  # in both tables, neurons 1 and 2 in one each.
  codes = np.array([[0, 0], [1, 1], [2, 3], [3, 2], [1, 3], [2, 2]],
                   np.int32)
  t = tables_lib.build(codes, 4, 3)
  q = np.array([[[2, 2]]], np.int32).transpose(0, 2, 1)   # (1, L=2, P=1)
  c = retrieval.candidates(t, q, np.array([0], np.int32), 4)
  assert c[0, 0] == 0 and c[0, 1] == 5
  assert sorted(c[0, 2:].tolist()) == [2, 3]
  top = retrieval.retrieve_topk(
      t, q, np.array([0], np.int32), 4, np.eye(6, 2, dtype=np.float32),
      np.arange(6, dtype=np.float32), np.ones((1, 2), np.float32), 2)
  np.testing.assert_array_equal(top, [[5, 3]])


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
              inference=retrieval.InferenceConfig(budget=0))
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
  assert 0.0 <= rec["lsh_recall"] <= 1.0 and rec["lsh_budget"] >= 1
  cfg.eval.lsh_probes = -1
  with pytest.raises(InputError):
    experiment.run(cfg, str(tmp_path))
