"""HeteroFL (Diao et al., ICLR 2021): a client of ratio 1/c trains column slices.

A client of compression c holds the first floor(d/c) columns of every
embedding table (its private user row included) and the rows of the dense
kernels that read them: `mlp_0` reads [user_mlp | item_mlp], `head` reads
[GMF product | MLP output]. The server averages each entry over the clients
that hold it (`base.per_entry`). Beyond c = d a device holds no column: it
is dropped (still evaluated, with the global model and its untrained row).
"""
import fractions
import math

import jax.numpy as jnp
import numpy as np

from fairjax import subspace
from fairjax.algorithms import base
from fairjax.algorithms import hashed


def heterofl(ctx):
  """The HeteroFL algorithm on `ctx`'s levels."""
  (_, d), = set(ctx.shapes.values())
  widths = [heterofl_width(d, c) for c in ctx.levels.compressions]
  downs = [column_subspace(ctx.shapes, w) if w else None for w in widths]
  full = hashed.spec_at(ctx, 1)
  coverage = lambda lv, params: base.ones_coverage(downs[lv])(params)
  agg = base.make_aggregator(ctx.fair.aggregate, ctx.levels,
                             downs=downs, coverage=coverage,
                             name="heterofl")
  levels = []
  for c, name, width, down in zip(ctx.levels.compressions, ctx.levels.names, widths, downs):
    if not width:
      levels.append(hashed.hashed_level(ctx, c, name, False, full, agg))
      continue
    levels.append(base.subspace_level(
        c, name, True, down, ctx.build_model(1, cols=width),
        ctx.build_model(ctx.num_users, cols=width), tuple(ctx.shapes), agg,
        user_cols=width))
  base.check_trains(levels, "heterofl", ctx.levels)
  return base.Algorithm(tuple(levels), agg, *base.same_seeds(hashed.spec_seeds(full)))


def heterofl_width(cols, c):
  """Columns a HeteroFL client of compression `c` holds: floor(cols / c)."""
  return math.floor(fractions.Fraction(cols) / fractions.Fraction(c))


def column_subspace(shapes, width) -> subspace.Subspace:
  """HeteroFL's sub-model: the first `width` columns of every embedding table.

  `collapse` slices the user and item tables present in the params (user
  tables appear only in evaluation params) and the input rows of the dense
  kernels that read them: `mlp_0` reads [user_mlp | item_mlp] (rows
  `[0, width)` and `[d, d + width)` of `2d`), `head` reads
  [GMF product | MLP output] (rows `[0, width)` and `[d, rows)`). `expand`
  puts the kept entries back in place with zeros elsewhere, so it is the
  transpose of `collapse`, and `expand(ones)` marks the entries a client holds.

  Args:
    shapes: dict item-table path -> (rows, cols), as for `make_spec`.
    width: the columns kept, 1 <= width <= cols.

  Returns:
    A `Subspace`.
  """
  (_, d), = set(shapes.values())
  names = {p[0] for p in shapes}
  has_gmf = "item_gmf" in names
  tables = [t for t in ("user_gmf", "item_gmf", "user_mlp", "item_mlp")
            if t.replace("user", "item") in names]
  if width == d:
    same = lambda params: params
    return subspace.Subspace(same, same)

  def kept_rows(layer, full_rows):
    if layer == "mlp_0":
      return np.r_[0:width, d:d + width]
    if layer == "head" and has_gmf:
      return np.r_[0:width, d:full_rows]
    return None  # MLP-only head: it reads the tower's output, not embeddings

  def collapse(params):
    out = dict(params)
    for t in tables:
      if t in params:
        out[t] = {"embedding": params[t]["embedding"][:, :width]}
    for layer in ("mlp_0", "head"):
      if layer in params:
        kernel = params[layer]["kernel"]
        rows = kept_rows(layer, kernel.shape[0])
        if rows is not None:
          out[layer] = dict(params[layer], kernel=kernel[rows])
    return out

  def expand(params):
    out = dict(params)
    for t in tables:
      if t in params:
        e = params[t]["embedding"]
        out[t] = {"embedding": jnp.pad(e, ((0, 0), (0, d - e.shape[1])))}
    for layer in ("mlp_0", "head"):
      if layer in params:
        kernel = params[layer]["kernel"]
        # mlp_0 lost 2 (d - width) rows (user and item halves), head d - width.
        full_rows = kernel.shape[0] + (d - width) * (2 if layer == "mlp_0" else 1)
        rows = kept_rows(layer, full_rows)
        if rows is not None:
          zero = jnp.zeros((full_rows,) + kernel.shape[1:], kernel.dtype)
          out[layer] = dict(params[layer], kernel=zero.at[rows].set(kernel))
    return out

  return subspace.Subspace(collapse, expand)
