"""configs/heavy.py end to end on a tiny heavy-user set written as adjacency files."""
import json
import os
import sys

import numpy as np

from conftest import REPO
from fairjax import data
from fairjax import experiment

sys.path.insert(0, REPO)
from configs import heavy  # pylint: disable=g-import-not-at-top,wrong-import-position


def _heavy_dataset(num_users=16, num_items=60, seed=0):
  """A few users holding most of a small catalog, with taste: item % 3 == user % 3."""
  rng = np.random.default_rng(seed)
  users, items = [], []
  for u in range(num_users):
    liked = [i for i in range(num_items) if i % 3 == u % 3]
    other = [i for i in range(num_items) if i % 3 != u % 3]
    mine = list(rng.choice(liked, 15, replace=False)) + list(rng.choice(other, 5, replace=False))
    users += [str(u)] * len(mine)
    items += [str(i) for i in mine]
  raw = data.RawInteractions(np.array(users, object), np.array(items, object), None, None)
  return data.heavy_split(raw, data.heavy.HeavySpec("synthetic", 12, 0.3), seed=0)


def test_heavy_config_runs_on_adjacency_files(tmp_path):
  train, test = data.write_adjacency(_heavy_dataset(), str(tmp_path / "adj"))
  config = heavy.get_config()
  config.data.name = ""
  config.data.path = train
  config.data.test_path = test
  config.rounds = 2
  config.clients_per_round = 4
  config.eval.every = 1
  config.mlp_layers = (8, 4)
  config.capacities = "1:0.5,2:0.5"
  workdir = str(tmp_path / "w")
  final = experiment.run(config, workdir, verbose=False)
  assert final["final"] and final["round"] == 2
  for key in ("ndcg@20", "recall@20", "level/1x/ndcg@20", "level/2x/ndcg@20"):
    assert 0.0 <= final[key] <= 1.0, key
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["round"] for r in lines] == [1, 2]
