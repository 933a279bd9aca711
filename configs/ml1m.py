r"""FAIR and baselines on MovieLens-1M.

  python -m launch.train --config=configs/ml1m.py --workdir=runs/ml1m
  python -m launch.train --config=configs/ml1m.py --workdir=runs/ml1m_c \
      --config.algorithm=centralized --config.model=neumf
  python -m launch.train --config=configs/ml1m.py --workdir=runs/ml1m_pop \
      --config.algorithm=popularity
"""
from configs import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.data.name = "ml-1m"
  # Centralized NeuMF: the best of the settings tried (RESULTS.md); longer
  # training over-fits without a validation split to stop on.
  config.train.batch_size = 256
  config.train.lr = 1e-3
  config.train.epochs = 7
  config.eval.every = 25
  return config
