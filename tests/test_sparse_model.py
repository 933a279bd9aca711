"""The high-level model API and the launch entry point."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.experimental import sparse as jsparse

from sparse import data as data_lib
from sparse import experiment
from sparse import model as model_lib
from sparse import tasks
from sparse.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _small(n=300):
  return tasks.synthetic_xc(n, input_dim=2000, n_train=2048, n_test=256,
                            seed=0)


def test_fit_evaluate_predict_save_load(tmp_path):
  d = _small()
  m = model_lib.Model([model_lib.Dense(32),
                       model_lib.Output(300, sparsity=0.1, shared_size=80)],
                      d.input_dim, learning_rate=0.01)
  hist = m.fit(d.x_train, d.y_train, epochs=3, batch_size=128,
               validation_data=(d.x_test, d.y_test))
  assert [h["epoch"] for h in hist] == [1, 2, 3]
  assert hist[-1]["loss"] < hist[0]["loss"]
  assert hist[-1]["p@1"] > 0.3
  top = m.predict(d.x_test, top_k=5)
  assert top.shape == (256, 5)
  fast = m.predict(d.x_test, top_k=2, sparse_inference=True)
  assert fast.shape == (256, 2)
  path = str(tmp_path / "m.npz")
  m.save(path)
  m2 = model_lib.Model.load(path)
  np.testing.assert_array_equal(m2.predict(d.x_test, top_k=5), top)


def test_inputs_as_bcoo_and_lists_agree():
  d = _small()
  x = d.x_test.take(np.arange(20))
  dense = np.zeros((20, d.input_dim), np.float32)
  for i in range(20):
    dense[i, x.ids[x.offsets[i]:x.offsets[i + 1]]] = 1.0
  bcoo = jsparse.BCOO.fromdense(dense)
  lists = [x.ids[x.offsets[i]:x.offsets[i + 1]].tolist() for i in range(20)]
  m = model_lib.Model([model_lib.Dense(8), model_lib.Output(300)],
                      d.input_dim)
  a = m.predict(bcoo, top_k=3)
  np.testing.assert_array_equal(a, m.predict(lists, top_k=3))
  np.testing.assert_array_equal(a, m.predict((x.ids, x.offsets), top_k=3))


def test_per_example_mode_and_sampled_hidden_layer_train():
  d = tasks.synthetic_xc(300, input_dim=2000, n_train=512, n_test=8, seed=0)
  m = model_lib.Model([model_lib.Dense(32),
                       model_lib.Dense(64, sparsity=0.5, num_tables=8),
                       model_lib.Output(300, sparsity=0.1, num_tables=8,
                                        active_set="per_example")],
                      d.input_dim, learning_rate=0.01)
  hist = m.fit(d.x_train, d.y_train, epochs=2, batch_size=128)
  assert hist[-1]["loss"] < hist[0]["loss"]


def test_bad_input_raises_input_error():
  with pytest.raises(InputError):
    model_lib.Model([model_lib.Dense(8)], 10)
  m = model_lib.Model([model_lib.Dense(8), model_lib.Output(5)], 10)
  with pytest.raises(InputError):
    m.fit([[1, 2]], [7])
  with pytest.raises(InputError):
    m.fit([[11]], [1])
  with pytest.raises(InputError):
    data_lib.as_inputs(([1, 2], [0, 1]))


def test_small_data_note_only_when_steps_are_few():
  note = experiment.small_data_note(240, 256, 5)
  assert "1 step(s) per epoch, 5 in all" in note and "--config.batch_size=" in note
  assert experiment.small_data_note(2000, 256, 20) is None  # 8 x 20 = 160 steps


def _launch(args):
  return subprocess.run([sys.executable, "-m", "launch.sparse", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_launch_trains_from_a_csv(tmp_path):
  rng = np.random.default_rng(0)
  words = {"sport": ["goal", "match", "team", "win"],
           "tech": ["chip", "code", "phone", "data"]}
  rows = ["title,topic"]
  for i in range(120):
    lab = "sport" if i % 2 else "tech"
    rows.append(" ".join(rng.choice(words[lab], 5)) + f" doc{i}," + lab)
  csv_path = tmp_path / "d.csv"
  csv_path.write_text("\n".join(rows) + "\n")
  work = tmp_path / "w"
  r = _launch(["--config=configs/text.py", f"--config.data.path={csv_path}",
               "--config.data.text_column=title",
               "--config.data.label_column=topic",
               "--config.batch_size=32", "--config.model.hidden=16",
               "--config.model.learning_rate=0.02", "--config.epochs=4",
               f"--workdir={work}"])
  assert r.returncode == 0, r.stderr
  recs = [json.loads(l) for l in (work / "metrics.jsonl").read_text()
          .splitlines()]
  assert [x["epoch"] for x in recs] == [1, 2, 3, 4]
  assert all({"epoch", "p@1", "seconds"} <= set(x) for x in recs)
  assert recs[-1]["p@1"] > 0.7
  # Progress a person can watch: the data, a hint (96 rows at batch 32 are 12
  # steps in all), a line per epoch, and a final table with the last P@1.
  assert "data: 96 training and 24 test examples, 2 classes" in r.stderr
  assert "note: 96 training rows at batch_size 32 make 3 step(s) per epoch" in r.stderr
  for e in range(1, 5):
    assert f"epoch {e}/4: loss" in r.stderr
  assert "| epoch | loss | p@1 |" in r.stdout
  assert f"| 4 (last) | {recs[-1]['loss']:.4f} | {recs[-1]['p@1']:.4f} |" in r.stdout

  for bad, culprit in (
      ([f"--config.data.path={tmp_path}/missing.csv"], "missing.csv"),
      ([f"--config.data.path={csv_path}", "--config.data.text_column=nope"],
       "nope"),
      ([f"--config.data.path={csv_path}", "--config.data.nokey=1"], "nokey")):
    r = _launch(["--config=configs/text.py", *bad, f"--workdir={work}"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and culprit in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
