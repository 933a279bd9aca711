"""Defaults shared by the recommendation experiments (ml100k.py, ml1m.py)."""
import ml_collections


def base_config(arg=None):
  """The full set of keys; experiment files override a few of them."""
  del arg
  c = ml_collections.ConfigDict()
  c.algorithm = "fair"  # fair fedavg drop smallest heterofl fedhm fair_inconsistent
  #                      centralized popularity
  c.seed = 0
  c.model = "neumf"  # gmf mlp neumf
  c.embed_dim = 32
  c.mlp_layers = (64, 32, 16)

  c.data = ml_collections.ConfigDict()
  c.data.name = ""  # ml-100k ml-1m, or "" with data.path
  c.data.path = ""
  c.data.format = "auto"  # auto movielens inter csv tsv adjacency
  c.data.test_path = ""
  c.data.split = "loo"  # loo random
  c.data.test_fraction = 0.2
  c.data.min_rating = 0.0
  c.data.seed = 0  # seeds the split (random split, ties in time)

  c.eval = ml_collections.ConfigDict()
  c.eval.protocol = "sampled"  # sampled full
  c.eval.every = 25
  c.eval.num_negatives = 99

  # Centralized training (algorithm=centralized).
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 12
  c.train.batch_size = 1024
  c.train.lr = 2e-3
  c.train.optimizer = "adam"  # adam adamw sgd adagrad yogi
  c.train.schedule = "constant"  # constant cosine
  c.train.weight_decay = 0.0
  c.train.loss = "bce"
  c.train.num_negatives = 4
  c.train.steps_per_call = 256

  # Federated rounds.
  c.rounds = 200
  c.clients_per_round = 128
  c.local_epochs = 2
  c.capacities = "1:0.25,8:0.25,64:0.25,512:0.25"
  c.checkpoint_every = 25

  c.client = ml_collections.ConfigDict()
  c.client.optimizer = "sgd"
  c.client.lr = 0.5
  c.client.batch_size = 64
  c.client.loss = "bce"
  c.client.num_negatives = 4
  c.client.max_items = 512  # cap on a client's training items per round
  c.client.dropout = 0.0  # probability that a sampled client never answers
  c.client.poison = ""  # test hook: "nan", "huge" or "drop" one client a round

  c.server = ml_collections.ConfigDict()
  # sgd with lr 1 is FedAvg; adam is FedAdam (the default: per-coordinate
  # steps keep rarely seen item rows from being diluted by the average).
  c.server.optimizer = "adam"
  c.server.lr = 3e-2
  c.server.max_update_norm = 0.0  # reject updates with larger norm (0 = off)
  c.server.clip_norm = 0.0

  c.fair = ml_collections.ConfigDict()
  c.fair.aggregate = "delta"  # delta weights
  c.fair.exact_sizes = False
  c.fair.federate_user = False
  c.fair.execution = "vmap"  # vmap scan
  c.fair.chunk_size = 8  # clients per vmapped chunk (0 = all of a level)
  c.fair.hash_seed = 17

  c.num_devices = 0  # 0 = every visible device
  return c
