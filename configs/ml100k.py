r"""FAIR on MovieLens-100K: the default experiment (`make demo`).

  python -m launch.train --config=configs/ml100k.py --workdir=runs/ml100k
  python -m launch.train --config=configs/ml100k.py --workdir=runs/c \
      --config.algorithm=centralized

Every key below can be overridden with --config.KEY=VALUE.
"""
from configs import common


def get_config(arg=None):
  config = common.base_config(arg)
  config.data.name = "ml-100k"
  config.rounds = 100
  config.clients_per_round = 64
  config.eval.every = 20
  config.train.epochs = 20
  return config
