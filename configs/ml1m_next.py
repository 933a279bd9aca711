r"""Next-item prediction on MovieLens-1M with the sparse model.

The input is the user's `data.history` most recent items (sparse ids), the
label the next item (N = 3,706). Each user's last item is the test example.

  python -m launch.sparse --config=configs/ml1m_next.py --workdir=runs/ml1m
  python -m launch.sparse --config=configs/ml1m_next.py \
      --config.model.sparsity=1.0 --workdir=runs/ml1m_dense
"""
from configs import text


def get_config():
  c = text.base_config()
  c.task = "ml1m_next"
  c.epochs = 5
  c.data = text.ml_collections.ConfigDict()
  c.data.name = "ml-1m"
  c.data.path = ""
  c.data.history = 10
  return c
