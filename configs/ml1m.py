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
  return config
