"""Neural Collaborative Filtering models (He et al., WWW 2017): GMF, MLP, NeuMF.

Every embedding lookup goes through `fairjax.subspace.lookup`, so one module
serves both the plain tables of the server and the hashed tables of a
compressed client: a table whose `TableSpec.size` is set holds `size` floats
and computes its rows on the fly as `g(i, j) * w[h(i, j) mod size]`.

Param layout (the paths that subspace specs name):
  user_gmf/embedding, item_gmf/embedding     (GMF and NeuMF)
  user_mlp/embedding, item_mlp/embedding     (MLP and NeuMF)
  mlp_0 .. mlp_{L-1}, head                   (dense layers)
"""
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fairjax import subspace
from fairjax.errors import InputError

MODELS = ("gmf", "mlp", "neumf")
USER_TABLES = ("user_gmf", "user_mlp")
ITEM_TABLES = ("item_gmf", "item_mlp")


class Embedding(nn.Module):
  """An embedding table, plain, hashed or low-rank, looked up through one function.

  With `rank` set the table is held as factors `u [rows, rank]`,
  `v [cols, rank]` and its rows are `u[ids] @ v^T` (FedHM's clients).
  """
  spec: subspace.TableSpec
  stddev: float = 0.01
  rank: Optional[int] = None

  @nn.compact
  def __call__(self, ids, seed=None):
    if self.rank is not None:
      init = nn.initializers.normal(self.stddev)
      u = self.param("u", init, (self.spec.rows, self.rank))
      v = self.param("v", init, (self.spec.cols, self.rank))
      return u[jnp.asarray(ids)] @ v.T
    spec = self.spec if seed is None else self.spec._replace(seed=seed)
    if self.spec.size is None:
      shape = (self.spec.rows, self.spec.cols)
    else:
      shape = (self.spec.size,)
    w = self.param("embedding", nn.initializers.normal(self.stddev), shape)
    # A no-op unless "perturbations" are passed to apply: then the gradient
    # with respect to them is dL/d(rows looked up), which sparse SGD scatters
    # back into the table (fairjax.client) without a dense table gradient.
    return self.perturb("rows", subspace.lookup(w, spec, ids))


class NCF(nn.Module):
  """GMF, MLP or NeuMF scoring (user, item) pairs; returns logits.

  Attributes:
    kind: "gmf", "mlp" or "neumf".
    tables: TableSpec per table name (user_gmf, item_gmf, user_mlp,
      item_mlp) for the tables this kind uses; see `table_specs`.
    mlp_layers: widths of the MLP tower's hidden layers.
    item_rank: if set, item tables are low-rank factors of this rank.
    prior: if set, the initial knots of a popularity prior (see
      `popularity_prior`): the logit gains `interp(log(1 + i), xs, knots)`
      with `knots` a trained param of this many floats and `xs` evenly
      spaced over [0, log(num_items)]. Item ids must be popularity ranks
      (`fairjax.data.by_popularity`).
  """
  kind: str
  tables: Tuple[Tuple[str, subspace.TableSpec], ...]  # hashable: jit-static
  mlp_layers: Sequence[int] = (64, 32, 16)
  item_rank: Optional[int] = None
  prior: Tuple[float, ...] = ()

  @nn.compact
  def __call__(self, users, items, seeds=None):
    """Logits of (users, items); `seeds` overrides item-table hash seeds.

    Args:
      users: int array of user rows.
      items: int array of item rows, same shape.
      seeds: optional dict table name -> (traced) int seed, for clients that
        hash with their own seed (the fair_inconsistent ablation).
    """
    seeds = seeds or {}
    tables = dict(self.tables)
    parts = []
    if self.kind in ("gmf", "neumf"):
      u = Embedding(tables["user_gmf"], name="user_gmf")(users)
      v = Embedding(tables["item_gmf"], rank=self.item_rank, name="item_gmf")(
          items, seeds.get("item_gmf"))
      parts.append(u * v)
    if self.kind in ("mlp", "neumf"):
      u = Embedding(tables["user_mlp"], name="user_mlp")(users)
      v = Embedding(tables["item_mlp"], rank=self.item_rank, name="item_mlp")(
          items, seeds.get("item_mlp"))
      x = jnp.concatenate([u, v], axis=-1)
      for i, width in enumerate(self.mlp_layers):
        x = nn.relu(nn.Dense(width, kernel_init=nn.initializers.glorot_uniform(),
                             name=f"mlp_{i}")(x))
      parts.append(x)
    x = jnp.concatenate(parts, axis=-1)
    logits = nn.Dense(1, kernel_init=nn.initializers.lecun_uniform(), name="head")(x)[..., 0]
    if self.prior:
      knots = self.param("prior", lambda _, shape: jnp.asarray(self.prior, jnp.float32),
                         (len(self.prior),))
      logits = logits + prior_at(knots, tables[table_names(self.kind)[1]].rows, items)
    return logits


def prior_xs(num_items, num_knots):
  """Where the prior's knots sit: evenly over log(1 + rank), rank in [0, n - 1]."""
  return jnp.linspace(0.0, jnp.log(float(max(num_items, 2))), num_knots)


def prior_at(knots, num_items, items):
  """The prior of items (ids = popularity ranks): knots interpolated over log(1 + id)."""
  x = jnp.log1p(jnp.asarray(items).astype(jnp.float32))
  return jnp.interp(x, prior_xs(num_items, knots.shape[0]), knots)


def popularity_prior(train_items, num_items, num_knots=32, num_negatives=1):
  """Initial knots: the item-only logit that fits the training popularity.

  With items numbered by popularity (`fairjax.data.by_popularity`) the
  counts fall with the id, so the interpolated prior ranks items as the
  popularity baseline does (ties aside), from `num_knots` floats a device
  holds instead of one count per item. The knots start at the logit that
  minimises BCE for an item-only model when positives are drawn by
  popularity and `num_negatives` negatives uniformly:
  `log(p_pos(i) / p_neg(i)) - log(num_negatives)`, with `p_pos(i)` the
  count of item i plus one, normalised.

  Args:
    train_items: int array of training items (ids = popularity ranks).
    num_items: catalogue size.
    num_knots: knots of the curve (>= 2).
    num_negatives: negatives per positive in the clients' loss.

  Returns:
    tuple of `num_knots` floats (hashable: a static model attribute).
  """
  if int(num_knots) < 2:
    raise InputError(f"item_prior_knots: must be at least 2, got {num_knots}")
  counts = np.bincount(np.asarray(train_items), minlength=num_items).astype(np.float64)
  if np.any(np.diff(counts) > 0):
    raise InputError("item_prior: item ids are not in order of popularity; "
                     "set data.item_order=popularity")
  xs = np.asarray(prior_xs(num_items, int(num_knots)), np.float64)
  ranks = np.clip(np.expm1(xs), 0, num_items - 1)
  # Linear interpolation between the neighbouring ranks.
  lo = np.floor(ranks).astype(int)
  hi = np.minimum(lo + 1, num_items - 1)
  frac = ranks - lo
  y = np.log((counts + 1) / (counts + 1).mean()) - np.log(max(int(num_negatives), 1))
  return tuple(float(v) for v in (1 - frac) * y[lo] + frac * y[hi])


class ModelDef(NamedTuple):
  """A model and the specs of its tables, enough to init and apply it."""
  module: NCF

  @property
  def tables(self) -> Mapping[str, subspace.TableSpec]:
    return dict(self.module.tables)

  def init(self, rng):
    ids = jnp.zeros((1,), jnp.int32)
    return self.module.init(rng, ids, ids)["params"]

  def apply(self, params, users, items, seeds=None):
    return self.module.apply({"params": params}, users, items, seeds)


def table_names(kind):
  """The embedding tables a model kind uses."""
  if kind == "gmf":
    return ("user_gmf", "item_gmf")
  if kind == "mlp":
    return ("user_mlp", "item_mlp")
  return ("user_gmf", "item_gmf", "user_mlp", "item_mlp")


def table_specs(kind, num_users, num_items, embed_dim,
                item_sizes: Optional[Mapping[str, Optional[int]]] = None,
                seeds: Optional[Mapping[str, int]] = None,
                mlp_dim: Optional[int] = None, layout: str = "hash"):
  """Plain user tables and (optionally hashed) item tables for `kind`.

  Args:
    kind: model kind.
    num_users: rows of the user tables (1 on a federated client: its own row).
    num_items: rows of the item tables.
    embed_dim: columns of every table.
    item_sizes: hashed size per item table name; None or missing = plain.
    seeds: hash seed per item table name.
    mlp_dim: if set, the columns of the MLP tables (user_mlp, item_mlp)
      instead of `embed_dim`.
    layout: `TableSpec.layout` of the hashed item tables.

  Returns:
    dict table name -> TableSpec.
  """
  item_sizes = item_sizes or {}
  seeds = seeds or {}
  specs = {}
  for name in table_names(kind):
    cols = embed_dim if mlp_dim is None or not name.endswith("_mlp") else mlp_dim
    if name in USER_TABLES:
      specs[name] = subspace.TableSpec(num_users, cols, 0, None)
    else:
      size = item_sizes.get(name)
      specs[name] = subspace.TableSpec(num_items, cols, seeds.get(name, 0), size,
                                       layout if size is not None else "hash")
  return specs


def make_model(kind, num_users, num_items, embed_dim, mlp_layers=(64, 32, 16),
               item_sizes=None, seeds=None, *, cols=None, item_rank=None,
               mlp_dim=None, prior=(), layout="hash") -> ModelDef:
  """Builds an NCF model definition, validating its hyper-parameters.

  Args:
    kind: "gmf", "mlp" or "neumf".
    num_users: rows of the user tables.
    num_items: rows of the item tables.
    embed_dim: columns of every table.
    mlp_layers: widths of the MLP tower.
    item_sizes: hashed size per item table name (see `table_specs`).
    seeds: hash seed per item table name.
    cols: if set, the width of every embedding table instead of `embed_dim`
      (a HeteroFL client holds the first `cols` columns; the dense layers
      that read the embeddings shrink with them).
    item_rank: if set, item tables are low-rank factors `u v^T` of this rank
      (a FedHM client).
    mlp_dim: if set, the width of the MLP tables (user_mlp, item_mlp) instead
      of `embed_dim`, as in the NCF paper's NeuMF (centralized training only;
      not combined with `cols`).
    prior: initial knots of the popularity prior (`popularity_prior`), or ()
      for none.
    layout: where a hashed item table puts its elements (`TableSpec.layout`).

  Returns:
    A ModelDef.
  """
  if kind not in MODELS:
    raise InputError(f"model: unknown model {kind!r}; choose one of {', '.join(MODELS)}")
  if int(embed_dim) < 1:
    raise InputError(f"embed_dim: must be a positive integer, got {embed_dim}")
  if any(int(w) < 1 for w in mlp_layers):
    raise InputError(f"mlp_layers: widths must be positive, got {tuple(mlp_layers)}")
  width = int(embed_dim) if cols is None else int(cols)
  if width < 1 or (item_rank is not None and int(item_rank) < 1):
    raise InputError(f"model: table width {width} and rank {item_rank} must be >= 1")
  if mlp_dim is not None:
    if cols is not None:
      raise InputError("model: mlp_dim and cols cannot be combined")
    if int(mlp_dim) < 1:
      raise InputError(f"mlp_embed_dim: must be a positive integer, got {mlp_dim}")
    mlp_dim = int(mlp_dim)
  if layout not in subspace.LAYOUTS:
    raise InputError(f"fair.layout: unknown layout {layout!r}; choose one of "
                     f"{', '.join(subspace.LAYOUTS)}")
  tables = table_specs(kind, num_users, num_items, width, item_sizes, seeds, mlp_dim, layout)
  module = NCF(kind=kind, tables=tuple(tables.items()), mlp_layers=tuple(int(w) for w in mlp_layers),
               item_rank=None if item_rank is None else int(item_rank),
               prior=tuple(float(k) for k in prior))
  return ModelDef(module)


def neumf_from_pretrained(gmf_params, mlp_params, alpha=0.5):
  """NeuMF params built from a trained GMF and a trained MLP (NCF paper, 3.4.1).

  The embeddings and the MLP tower are copied; the head reads
  concat(GMF vector, MLP vector), so its kernel becomes
  concat(alpha * GMF head, (1 - alpha) * MLP head) and its bias
  alpha * GMF bias + (1 - alpha) * MLP bias: at the start NeuMF's logit is
  the alpha-weighted sum of the two models' logits.

  Args:
    gmf_params: params of a "gmf" model.
    mlp_params: params of an "mlp" model.
    alpha: weight of GMF in the head, in [0, 1].

  Returns:
    params of the "neumf" model with the same tables and tower.
  """
  if not 0.0 <= float(alpha) <= 1.0:
    raise InputError(f"pretrain_alpha: must be in [0, 1], got {alpha}")
  params = {k: v for k, v in mlp_params.items() if k != "head"}
  params.update({k: v for k, v in gmf_params.items() if k != "head"})
  g, m = gmf_params["head"], mlp_params["head"]
  params["head"] = {
      "kernel": jnp.concatenate([alpha * g["kernel"], (1.0 - alpha) * m["kernel"]], axis=0),
      "bias": alpha * g["bias"] + (1.0 - alpha) * m["bias"],
  }
  return params


def item_table_paths(kind):
  """Param paths of the item tables (the ones FAIR compresses)."""
  return tuple((name, "embedding") for name in table_names(kind) if name in ITEM_TABLES)


def user_table_paths(kind):
  """Param paths of the user tables (private to each client in FL)."""
  return tuple((name, "embedding") for name in table_names(kind) if name in USER_TABLES)


def split_user_params(params, kind):
  """Splits params into (user tables, everything else); both nested dicts."""
  user = {name: params[name] for name in table_names(kind) if name in USER_TABLES}
  rest = {k: v for k, v in params.items() if k not in user}
  return user, rest


def merge_user_params(user, rest):
  return {**rest, **user}


def bce_loss(pos_logits, neg_logits, mask=None):
  """Binary cross-entropy with positives labelled 1 and negatives 0.

  Args:
    pos_logits: [B] logits of observed pairs.
    neg_logits: [B, k] logits of sampled negatives.
    mask: optional [B] weights (padding = 0).

  Returns:
    mean loss over the unmasked examples (pos and negs counted separately).
  """
  pos = jax.nn.softplus(-pos_logits)
  neg = jax.nn.softplus(neg_logits).sum(-1)
  per = pos + neg
  denom = 1 + neg_logits.shape[-1]
  if mask is None:
    return per.mean() / denom
  return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0) / denom


def bpr_loss(pos_logits, neg_logits, mask=None):
  """Bayesian personalised ranking: -log sigmoid(pos - neg), per negative."""
  per = jax.nn.softplus(neg_logits - pos_logits[..., None]).mean(-1)
  if mask is None:
    return per.mean()
  return (per * mask).sum() / jnp.maximum(mask.sum(), 1.0)


LOSSES = {"bce": bce_loss, "bpr": bpr_loss}


def get_loss(name):
  if name not in LOSSES:
    raise InputError(f"loss: unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
  return LOSSES[name]
