r"""Synthetic extreme classification (power-law labels, sparse inputs).

  python -m launch.sparse --config=configs/xc.py --workdir=runs/xc100k
  python -m launch.sparse --config=configs/xc.py:n=670091 --workdir=runs/xc670k
  python -m launch.sparse --config=configs/xc.py --config.model.sparsity=1.0 \
      --workdir=runs/xc100k_dense
"""
from configs import text


def get_config(arg: str = ""):
  opts = dict(kv.split("=") for kv in arg.split(",") if kv)
  c = text.base_config()
  c.task = "xc"
  c.epochs = 2
  c.data = text.ml_collections.ConfigDict()
  c.data.n_classes = int(opts.get("n", 100_000))
  c.data.input_dim = 100_000
  c.data.n_train = int(opts.get("n_train", 100_000))
  c.data.n_test = 5_000
  return c
