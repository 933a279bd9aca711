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
  # Federated models score `model(u, i) + prior(rank of i)`: "popularity"
  # starts the prior at the training log-popularity curve, held as
  # `item_prior_knots` floats over log(1 + rank) (a dense param, trained and
  # averaged like the others; docs/design.md, "A popularity prior"); "none"
  # is the plain NCF model.
  c.item_prior = "popularity"
  c.item_prior_knots = 32

  c.data = ml_collections.ConfigDict()
  c.data.name = ""  # ml-100k ml-1m cj (or a HEAVY set), or "" with data.path
  c.data.path = ""
  c.data.format = "auto"  # auto movielens inter csv tsv adjacency
  c.data.test_path = ""
  c.data.split = "loo"  # loo random
  c.data.test_fraction = 0.2
  c.data.min_rating = 0.0
  c.data.seed = 0  # seeds the split (random split, ties in time)
  # "popularity": item ids in order of training popularity (item 0 the most
  # popular), so a device knows an item's rank from its id; "file": the
  # file's ids in sorted order. The popularity prior needs "popularity".
  c.data.item_order = "popularity"

  c.eval = ml_collections.ConfigDict()
  c.eval.protocol = "sampled"  # sampled full both
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
  # L2 on the embedding rows a batch looks up (0 = off).
  c.train.embed_l2 = 0.0
  # Centralized-only architecture: width of the MLP tables (0 = embed_dim) and
  # the MLP tower (() = mlp_layers). Federated runs ignore both.
  c.train.mlp_embed_dim = 0
  c.train.mlp_layers = ()
  # NeuMF pre-training (NCF paper; model=neumf only): both > 0 trains GMF, then
  # MLP, for these many epochs (train.optimizer, train.lr), starts NeuMF from
  # them (tables and tower copied, head concat(alpha * GMF head,
  # (1 - alpha) * MLP head)), then trains NeuMF train.epochs with
  # finetune_optimizer / finetune_lr ("" / 0 = train.optimizer / train.lr).
  c.train.pretrain_gmf_epochs = 0
  c.train.pretrain_mlp_epochs = 0
  c.train.pretrain_alpha = 0.5
  c.train.finetune_optimizer = ""
  c.train.finetune_lr = 0.0

  # Federated rounds.
  c.rounds = 200
  c.clients_per_round = 128
  c.local_epochs = 2
  c.capacities = "1:0.25,8:0.25,64:0.25,512:0.25"
  c.checkpoint_every = 25

  c.client = ml_collections.ConfigDict()
  c.client.optimizer = "sgd"
  c.client.lr = 0.5
  # With optimizer sgd, adam or adagrad, embedding tables take row-sparse
  # steps (fairjax/rowopt.py): a step costs the rows its batch looks up, not
  # the table. sgd and adagrad: the same math as the dense step; adam: lazy
  # (a row's moments and value wait while no batch looks it up), or with
  # client.catch_up the dense step's math (the skipped steps are replayed
  # when the row is next looked up). False takes dense steps.
  c.client.sparse_update = True
  c.client.catch_up = False
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
  # Adam/Yogi/Adagrad epsilon (FedAdam's tau); 0 keeps optax's default.
  c.server.eps = 0.0
  c.server.max_update_norm = 0.0  # reject updates with larger norm (0 = off)
  c.server.clip_norm = 0.0

  c.fair = ml_collections.ConfigDict()
  c.fair.aggregate = "delta"  # delta weights nested
  # How a level's summed update reaches the full tables: "adjoint" (P D^-1 w,
  # the transpose of collapse: a compressed client's update becomes the
  # projection of its gradient; the default since issue #23, RESULTS.md),
  # "expand" (P w, the original design's map: up to c times longer) or
  # "isometric" (P D^-1/2 w, norm-preserving). fair.aggregate=weights
  # averages weights, not updates: it needs "expand".
  c.fair.lift = "adjoint"
  # What a client of a hashed level holds: "mean" (the bucket means, the
  # design's collapse) or "lift" (the means scaled by count^power of the lift:
  # the left inverse of fair.lift, so a client's own view moves by exactly its
  # update; with lift=isometric its entries keep the full table's scale).
  c.fair.view = "mean"
  # Client weights p_k ∝ examples_k * c_k^-level_weight; 0 (the design's
  # p_k ∝ examples) treats every level alike.
  c.fair.level_weight = 0.0
  c.fair.exact_sizes = False  # the same as fair.sizes=exact
  # Level sizes: "nested" (fills each level's budget and nests along the
  # run's levels: subspace.nested_sizes; the default since issue #23),
  # "pow2" (2^floor(log2(n d / c)): nests, may use half the budget) or
  # "exact" (ceil(n d / c): fills it, nests only where sizes divide).
  c.fair.sizes = "nested"
  # Where a hashed table's elements go: "hash" (h(i, j) mod m) or "rank"
  # ((i * d + j) mod m: with items numbered by popularity, the m / d most
  # popular items keep buckets of their own; see subspace.TableSpec).
  c.fair.layout = "hash"
  # The server stores the user rows (each client sends its own down and up
  # every round; rows are never averaged across users): the same math as a
  # private row, with the row added to bytes_down / bytes_up.
  c.fair.federate_user = False
  c.fair.execution = "vmap"  # vmap scan
  c.fair.chunk_size = 8  # clients per vmapped chunk (0 = all of a level)
  c.fair.hash_seed = 17

  c.num_devices = 0  # 0 = every visible device
  return c
