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
  # Centralized NeuMF as in the NCF paper (RESULTS.md, "Foundation"): GMF
  # (32 factors) and MLP (128-wide tables, tower 128-64-32) pre-trained with
  # Adam, NeuMF built from them, then one epoch of plain SGD. Trained jointly
  # from scratch, NeuMF over-fits before it reaches HR@10 0.70.
  # `--config.model=gmf` / `mlp` ignore the pretrain keys: set train.epochs.
  config.train.batch_size = 256
  config.train.lr = 1e-3
  config.train.mlp_embed_dim = 128
  config.train.mlp_layers = (128, 64, 32)
  config.train.pretrain_gmf_epochs = 20
  config.train.pretrain_mlp_epochs = 8
  config.train.finetune_optimizer = "sgd"
  config.train.finetune_lr = 0.01
  config.train.epochs = 1
  config.eval.every = 25
  return config
