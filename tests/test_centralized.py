"""Centralized NCF training: separate MLP tables, batch L2, NeuMF pre-training."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SMALL_FLAGS
from conftest import run_launch
from conftest import small_config
from fairjax import centralized
from fairjax import data as data_lib
from fairjax import evaluation
from fairjax import models
from fairjax.errors import InputError


def test_mlp_dim_widens_only_the_mlp_tables():
  # Default: every table embed_dim wide, as the federated algorithms expect.
  plain = models.make_model("neumf", 5, 7, 4, (8, 4)).init(jax.random.PRNGKey(0))
  for name in ("user_gmf", "user_mlp"):
    chex.assert_shape(plain[name]["embedding"], (5, 4))
  chex.assert_shape(plain["mlp_0"]["kernel"], (8, 8))
  wide = models.make_model("neumf", 5, 7, 4, (8, 4), mlp_dim=6).init(jax.random.PRNGKey(0))
  chex.assert_shape(wide["user_gmf"]["embedding"], (5, 4))
  chex.assert_shape(wide["item_gmf"]["embedding"], (7, 4))
  chex.assert_shape(wide["user_mlp"]["embedding"], (5, 6))
  chex.assert_shape(wide["item_mlp"]["embedding"], (7, 6))
  chex.assert_shape(wide["mlp_0"]["kernel"], (12, 8))
  chex.assert_shape(wide["head"]["kernel"], (4 + 4, 1))
  with pytest.raises(InputError, match="mlp_embed_dim"):
    models.make_model("neumf", 5, 7, 4, (8, 4), mlp_dim=0)
  with pytest.raises(InputError, match="cols"):
    models.make_model("neumf", 5, 7, 4, (8, 4), mlp_dim=6, cols=2)


def test_neumf_from_pretrained_copies_and_mixes_heads():
  alpha = 0.3  # not 0.5: a swapped GMF/MLP head would be caught
  kw = dict(num_users=5, num_items=7, embed_dim=4, mlp_layers=(8, 4), mlp_dim=6)
  gmf = models.make_model("gmf", **kw)
  mlp = models.make_model("mlp", **kw)
  neumf = models.make_model("neumf", **kw)
  pg, pm = gmf.init(jax.random.PRNGKey(1)), mlp.init(jax.random.PRNGKey(2))
  # Non-zero biases, so the bias mix is tested too.
  pg = dict(pg, head={"kernel": pg["head"]["kernel"], "bias": jnp.array([0.7])})
  pm = dict(pm, head={"kernel": pm["head"]["kernel"], "bias": jnp.array([-0.2])})
  p = models.neumf_from_pretrained(pg, pm, alpha)
  chex.assert_trees_all_equal_shapes_and_dtypes(p, neumf.init(jax.random.PRNGKey(3)))
  for name in ("user_gmf", "item_gmf"):
    chex.assert_trees_all_equal(p[name], pg[name])
  for name in ("user_mlp", "item_mlp", "mlp_0", "mlp_1"):
    chex.assert_trees_all_equal(p[name], pm[name])
  chex.assert_trees_all_close(p["head"]["kernel"][:4], alpha * pg["head"]["kernel"])
  chex.assert_trees_all_close(p["head"]["kernel"][4:], (1 - alpha) * pm["head"]["kernel"])
  chex.assert_trees_all_close(p["head"]["bias"], alpha * 0.7 + (1 - alpha) * -0.2)
  # So NeuMF starts as the alpha-weighted sum of the two models' logits.
  u, i = jnp.array([0, 1, 4, 2]), jnp.array([6, 0, 3, 3])
  chex.assert_trees_all_close(
      neumf.apply(p, u, i), alpha * gmf.apply(pg, u, i) + (1 - alpha) * mlp.apply(pm, u, i),
      atol=1e-6)
  with pytest.raises(InputError, match="alpha"):
    models.neumf_from_pretrained(pg, pm, 1.5)


def _train(path, **overrides):
  config = small_config(path, **{"eval.every": 1, "model": "neumf", **overrides})
  dataset = data_lib.load(config.data)
  evaluate = evaluation.Evaluator(dataset, "sampled", 9, seed=0)
  records = []
  params, last = centralized.train_centralized(config, dataset, evaluate, records.append,
                                               lambda it, total, desc: it)
  return params, last, records


def test_pretraining_builds_neumf_from_the_trained_gmf_and_mlp(small_csv, monkeypatch):
  seen = []
  real = models.neumf_from_pretrained

  def spy(gmf, mlp, alpha):
    # Copies: NeuMF's training donates (deletes) the arrays it starts from.
    seen.append((jax.device_get(gmf), jax.device_get(mlp), alpha))
    return real(gmf, mlp, alpha)
  monkeypatch.setattr(models, "neumf_from_pretrained", spy)
  params, last, records = _train(
      small_csv, **{"train.pretrain_gmf_epochs": 2, "train.pretrain_mlp_epochs": 3,
                    "train.epochs": 1, "train.lr": 0.05, "train.mlp_embed_dim": 12,
                    "train.mlp_layers": (8, 4), "train.pretrain_alpha": 0.25,
                    "train.finetune_optimizer": "sgd", "train.finetune_lr": 1e-9})
  assert [(r["phase"], r["epoch"], r["round"]) for r in records] == [
      ("gmf", 1, 1), ("gmf", 2, 2), ("mlp", 1, 3), ("mlp", 2, 4), ("mlp", 3, 5),
      ("neumf", 1, 6)]
  assert last is records[-1] and 0.0 <= last["hr@10"] <= 1.0
  (gmf, mlp, alpha), = seen
  assert alpha == 0.25
  assert set(gmf) == {"user_gmf", "item_gmf", "head"}
  assert set(mlp) == {"user_mlp", "item_mlp", "mlp_0", "mlp_1", "head"}
  chex.assert_shape(mlp["item_mlp"]["embedding"], (30, 12))
  # The pre-trained parts were trained (init is N(0, 0.01^2); they grew) ...
  assert float(jnp.abs(gmf["item_gmf"]["embedding"]).max()) > 0.1
  assert float(jnp.abs(mlp["item_mlp"]["embedding"]).max()) > 0.1
  # ... and a negligible fine-tuning step leaves NeuMF where they put it.
  chex.assert_trees_all_close(params, real(gmf, mlp, alpha), atol=1e-6)


def test_without_pretraining_behaviour_is_unchanged(small_csv):
  _, last, records = _train(small_csv, **{"train.pretrain_gmf_epochs": 0,
                                          "train.pretrain_mlp_epochs": 0})
  assert [r["phase"] for r in records] == ["neumf", "neumf"]
  assert [r["round"] for r in records] == [1, 2]
  # GMF ignores the NeuMF-only pre-training keys.
  _, _, records = _train(small_csv, **{"model": "gmf", "train.pretrain_gmf_epochs": 3,
                                       "train.pretrain_mlp_epochs": 3})
  assert [r["phase"] for r in records] == ["gmf", "gmf"]


def test_embed_l2_shrinks_the_batch_rows(small_csv):
  norms = []
  for l2 in (0.0, 0.05):
    params, _, _ = _train(small_csv, **{"model": "gmf", "train.epochs": 4, "train.lr": 0.05,
                                        "train.embed_l2": l2})
    norms.append(float(np.mean(np.square(params["item_gmf"]["embedding"]))))
  assert norms[1] < 0.5 * norms[0], norms


@pytest.mark.parametrize("overrides, culprit", [
    ({"train.pretrain_gmf_epochs": 2}, "pretrain"),
    ({"train.pretrain_gmf_epochs": 2, "train.pretrain_mlp_epochs": 2,
      "train.pretrain_alpha": -0.1}, "pretrain_alpha"),
    ({"train.mlp_embed_dim": -1}, "mlp_embed_dim"),
    ({"train.embed_l2": -1.0}, "embed_l2"),
    ({"train.finetune_optimizer": "magic"}, "train.finetune_optimizer"),
])
def test_rejects_bad_centralized_options(small_csv, overrides, culprit):
  with pytest.raises(InputError, match=culprit):
    _train(small_csv, **overrides)


def test_ml1m_defaults_pretrain_end_to_end(tmp_path, small_csv):
  """The ml1m config's pre-training path from the command line, on tiny data."""
  workdir = str(tmp_path / "c")
  proc = run_launch("launch.train", [
      "--config=configs/ml1m.py", f"--workdir={workdir}", "--config.data.name=",
      f"--config.data.path={small_csv}", "--config.algorithm=centralized",
      "--config.model=neumf"] + SMALL_FLAGS + [
          "--config.train.pretrain_gmf_epochs=2", "--config.train.pretrain_mlp_epochs=2",
          "--config.train.mlp_embed_dim=16", "--config.train.mlp_layers=(16,8)",
          "--config.train.epochs=1", "--config.eval.every=1"])
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  assert [l["phase"] for l in lines] == ["gmf", "gmf", "mlp", "mlp", "neumf"]
  assert lines[-1]["final"] is True and lines[-1]["round"] == 5
  assert 0.0 <= lines[-1]["hr@10"] <= 1.0
