"""Hashed subspaces of embedding tables: sizes, collapse, expand, pytree specs.

A table `T` with `rows x cols` elements is represented at memory size `m` by
`w` of shape `[m]` with `T[i, j] = g(i, j) * w[h(i, j) mod m]` (see
`fairjax.hashing`). Writing `P_m` for this linear map:

* `expand(w) = P_m w` (a signed gather);
* `collapse(T) = D^-1 P_m^T T`, the least-squares `w`, where `D = P_m^T P_m`
  holds the bucket counts (empty buckets collapse to 0);
* between levels with `m_small | m_big`: `repeat(w) = F w` and
  `fold(w) = (F^T D_big F)^-1 F^T D_big w`, with `F` sending bucket `b` of
  the big array to bucket `b mod m_small`. The sign `g` is the same element
  sign at every level, so it lives inside `w` and neither map touches it.

A `TableSpec` with `size=None` is the plain, unhashed table (`c = 1`); every
function treats it as the level whose `w` is `T` itself.

At the pytree level a *subspace spec* maps a param path (a tuple of keys
into a nested params dict) to a `TableSpec`; `Subspace` is a named tuple of
two pure functions, `collapse(params)` and `expand(params)`, which compose
with `chain` like optax transforms.

Example:
  spec = make_spec({("item", "embedding"): (1682, 64)}, c=8, seed=0)
  down = subspace(spec)
  client_params = down.collapse(server_params)  # item table -> [m] floats
  server_view = down.expand(client_params)       # back to [1682, 64]
"""

import fractions
import math
import numbers
import zlib
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import errors
from fairjax import hashing

Path = tuple[str, ...]


class TableSpec(NamedTuple):
  """How one table is stored at one level.

  Attributes:
    rows: number of rows `n` of the full table.
    cols: number of columns `d` of the full table.
    seed: seed of the element hash and sign (same at every level of a
      consistent run).
    size: memory size `m` of the hashed array, or None for the plain table.
    layout: where element `(i, j)` goes: "hash" (bucket `h(i, j) mod m`) or
      "rank" (bucket `(i * cols + j) mod m`: with rows numbered by
      popularity, the `m / cols` most popular rows keep buckets of their
      own and each bucket holds exactly one of them; still consistent and,
      for power-of-two sizes, nested). Signs are `g(i, j)` either way.
  """
  rows: int
  cols: int
  seed: int
  size: int | None
  layout: str = "hash"


LAYOUTS = ("hash", "rank")
# Level sizes: the power-of-two ladder, ceil(n d / c), or `nested_sizes`.
SIZES = ("pow2", "exact", "nested")


Spec = Mapping[Path, TableSpec]


class Subspace(NamedTuple):
  """A pair of pure maps between two levels of a params pytree.

  Attributes:
    collapse: params at the larger level -> params at the smaller level.
    expand: params at the smaller level -> params at the larger level.
  """
  collapse: Callable[[dict], dict]
  expand: Callable[[dict], dict]


# ----------------------------------------------------------------- sizes


def level_size(rows, cols, c, exact=False):
  """The memory size of a `rows x cols` table at compression `c`.

  Args:
    rows: rows of the table.
    cols: columns of the table.
    c: compression factor, any real number >= 1; `c == 1` is the plain table.
    exact: if False, the power-of-two ladder `2**floor(log2(rows*cols/c))`
      (every level nests in every larger one and never exceeds the budget);
      if True, `ceil(rows*cols/c)`.

  Returns:
    The size `m` (at least 1), or None for `c == 1`.

  Raises:
    InputError: `c` is not a finite real number >= 1.
  """
  _check_shape(rows, cols)
  if (isinstance(c, bool) or not isinstance(c, numbers.Real)
      or not math.isfinite(c) or c < 1):
    raise errors.InputError(
        f"compression factor c={c!r} must be a finite number >= 1")
  if c == 1:
    return None
  # Exact rational arithmetic: a float quotient can round 2**k - epsilon up
  # to 2**k and put the level one rung too high.
  c = int(c) if isinstance(c, numbers.Integral) else float(c)
  target = fractions.Fraction(rows * cols) / fractions.Fraction(c)
  if exact:
    return max(1, math.ceil(target))
  return 1 << max(0, math.floor(target).bit_length() - 1)


def nested_sizes(rows, cols, compressions):
  """Sizes for a run's levels that nest and fill each level's budget.

  The power-of-two ladder nests but may use only half a level's budget
  (ML-1M's item tables at 8x: 8,192 floats of 14,824). Here the most
  compressed level takes `floor(n d / c)` floats and each larger level the
  largest multiple of the next smaller level's size within its own budget,
  so every size divides the larger ones (`h mod m2 = (h mod m1) mod m2`:
  the subspaces nest) and a level whose compression is k times a larger
  one's uses more than `1 - 1/k` of its budget.

  Args:
    rows, cols: the table's shape.
    compressions: the run's compression factors (any order; 1 = plain).

  Returns:
    dict compression -> size (None for c = 1).
  """
  _check_shape(rows, cols)
  out, prev = {}, None
  for c in sorted(set(compressions), reverse=True):
    if level_size(rows, cols, c) is None:  # c == 1 (and c checked)
      out[c] = None
      continue
    budget = max(1, int(fractions.Fraction(rows * cols) / fractions.Fraction(
        int(c) if isinstance(c, numbers.Integral) else float(c))))
    out[c] = prev = budget if prev is None else max(prev, budget // prev * prev)
  return out


def _check_shape(rows, cols):
  for name, v in (("rows", rows), ("cols", cols)):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
      raise errors.InputError(f"table {name}={v!r} must be a positive int")


# ------------------------------------------------------ single-table maps


def _check_spec(spec):
  _check_shape(spec.rows, spec.cols)
  if spec.size is not None and not 1 <= spec.size <= 2**31:
    raise errors.InputError(f"table size {spec.size!r} must be in [1, 2**31]")


def _full_buckets(spec):
  """Bucket and sign of every element, each `[rows, cols]` (server side)."""
  return _row_buckets(spec, jnp.arange(spec.rows, dtype=jnp.int32))


def _row_buckets(spec, ids):
  """Bucket and sign of the elements of rows `ids`, each `ids.shape + (cols,)`."""
  i = jnp.asarray(ids).astype(jnp.int32)[..., None]
  j = jnp.arange(spec.cols, dtype=jnp.int32)
  sign = hashing.element_sign(i, j, spec.seed)
  if spec.layout == "rank":
    flat = i.astype(jnp.uint32) * jnp.uint32(spec.cols) + j.astype(jnp.uint32)
    return (flat % jnp.uint32(spec.size)).astype(jnp.int32), sign
  return hashing.bucket(i, j, spec.seed, spec.size), sign


def _counts(b, size, dtype):
  """Elements per bucket, given every element's bucket `b`."""
  return jax.ops.segment_sum(jnp.ones(b.size, dtype), b.ravel(), num_segments=size)


def lookup(w, spec, ids):
  """Rows `ids` of the table stored as `w`, hashing only those rows.

  This is the embedding lookup of every model, for plain and hashed tables
  alike; its cost and memory are `len(ids) * cols`, never `rows * cols`.

  Args:
    w: `[rows, cols]` for a plain spec, `[size]` for a hashed one.
    spec: the table's `TableSpec`.
    ids: integer array of row ids, any shape.

  Returns:
    `ids.shape + (cols,)` array: `T[ids]`.
  """
  ids = jnp.asarray(ids)
  if spec.size is None:
    return w[ids]
  b, g = _row_buckets(spec, ids)
  return g.astype(w.dtype) * w[b]


def lookup_add(w, spec, ids, rows):
  """`w + J^T rows` where `J` is the Jacobian of `lookup(., spec, ids)`.

  The transpose of the lookup, as a scatter-add: the sparse SGD step on a
  table (`rows = -lr * dL/d lookup`) costs `len(ids) * cols`, where
  `jax.grad` through the lookup builds a dense zero table of `w`'s size and
  the optimizer then touches all of it. Repeated ids (and, for a hashed
  table, colliding elements) add up, as in the dense gradient.

  Args:
    w: the stored table (`[rows, cols]` plain, `[size]` hashed).
    spec: the table's `TableSpec` (its seed may be traced).
    ids: integer array of row ids, any shape.
    rows: `ids.shape + (cols,)`, what to add through the lookup.

  Returns:
    the updated `w`, same shape.
  """
  ids = jnp.asarray(ids)
  if spec.size is None:
    return w.at[ids].add(rows.astype(w.dtype))
  b, g = _row_buckets(spec, ids)
  return w.at[b].add(g.astype(w.dtype) * rows.astype(w.dtype))


def lookup_units(spec, ids):
  """The entries of the stored table that `lookup(w, spec, ids)` reads, and their signs.

  Returns `(units, signs)`: `(ids, None)` for a plain spec (whole rows of
  `w`); for a hashed one the bucket and sign of every element of the rows,
  each `ids.shape + (cols,)`. `lookup_add(w, spec, ids, rows)` equals
  `w.at[units].add(rows)` (plain) or `w.at[units].add(signs * rows)` (hashed).
  """
  ids = jnp.asarray(ids)
  if spec.size is None:
    return ids, None
  return _row_buckets(spec, ids)


def expand(w, spec):
  """The full table `P_m w`, `[rows, cols]` (identity for a plain spec)."""
  if spec.size is None:
    return w
  b, g = _full_buckets(spec)
  return g.astype(w.dtype) * w[b]


def bucket_counts(spec):
  """How many elements hash to each bucket: the diagonal of `P^T P`.

  Args:
    spec: a `TableSpec`.

  Returns:
    `int32` array `[size]`, or `[rows, cols]` of ones for a plain spec.
  """
  if spec.size is None:
    return jnp.ones((spec.rows, spec.cols), jnp.int32)
  return _counts(_full_buckets(spec)[0], spec.size, jnp.int32)


def _safe_divide(total, count):
  """`total / count`, and 0 where `count == 0` (an empty bucket)."""
  count = count.astype(total.dtype)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0)


def collapse(table, spec):
  """The least-squares `w` with `P_m w ~= table`: the signed bucket mean.

  Args:
    table: `[rows, cols]` full table.
    spec: the target `TableSpec`.

  Returns:
    `[size]` array (the table itself for a plain spec); empty buckets are 0.
  """
  if spec.size is None:
    return table
  b, g = _full_buckets(spec)
  total = jax.ops.segment_sum((g.astype(table.dtype) * table).ravel(), b.ravel(),
                              num_segments=spec.size)
  return _safe_divide(total, _counts(b, spec.size, jnp.int32))


def adjoint(w, spec, power=1.0):
  """`P_m D_m^{-power} w`, `[rows, cols]`; `power=1` is `collapse^T`, the transpose of collapse.

  Where `expand` (power 0) gives every element its bucket's value, the
  adjoint gives it the bucket's value divided by the bucket's count. Applied
  to a gradient in the `m` space, `adjoint` returns the orthogonal projection
  onto the subspace of the full-space gradient (`P D^-1 P^T g`), where
  `expand` returns `P P^T g`, which is up to `c` times longer. With
  `power=0.5` the map `P D^-1/2` has orthonormal columns: it preserves
  norms. Identity for a plain spec; empty buckets map to nothing.
  """
  if spec.size is None:
    return w
  b, g = _full_buckets(spec)  # hashed once, for the counts and the expand
  counts = _counts(b, spec.size, w.dtype)
  scale = jnp.where(counts > 0, jnp.maximum(counts, 1) ** -power, 0)
  return g.astype(w.dtype) * (w * scale)[b]


def rescale(w, spec, power):
  """`D_m^{power} w`: each bucket scaled by its count to the `power` (plain: `w`).

  With `fair.view="lift"` a client holds `rescale(collapse(table), power)`,
  `D^{power-1} P^T table`, the left inverse of the lift `adjoint(., power)`:
  `rescale(collapse(adjoint(w, power)), power) == w`. Empty buckets stay 0.
  """
  if spec.size is None:
    return w
  return w * jnp.maximum(bucket_counts(spec).astype(w.dtype), 1) ** power


def _static_seed(spec):
  # Seeds may be traced (per-client seeds under vmap); those cannot be
  # compared in Python, and agreeing on them is then the caller's business.
  return isinstance(spec.seed, numbers.Integral)


def _check_levels(big, small):
  """Checks that `small` is a level nested in `big`; InputError otherwise."""
  # A plain table's seed is unused, so only two hashed levels must agree
  # on it: consistency is what makes h mod m_small = (h mod m_big) mod m_small.
  if ((big.rows, big.cols) != (small.rows, small.cols)
      or (big.size is not None and small.size is not None
          and _static_seed(big) and _static_seed(small)
          and big.seed != small.seed)):
    raise errors.InputError(
        f"levels {big} and {small} are not levels of one table (rows, cols "
        f"and seed must match)")
  if big.size is None:
    return
  if small.size is None:
    raise errors.InputError(
        f"cannot map hashed level size={big.size} to the larger plain table")
  if big.size % small.size:
    raise errors.InputError(
        f"size {small.size} does not divide size {big.size}: the levels do "
        f"not nest")


def fold(w_big, big, small):
  """Collapses level `big` to the nested level `small`: count-weighted fold.

  `fold(collapse(T, big), big, small) == collapse(T, small)` for every `T`.

  Args:
    w_big: array at level `big` (`[big.size]`, or `[rows, cols]` if plain).
    big: the larger `TableSpec`.
    small: the smaller `TableSpec`; `small.size` must divide `big.size`.

  Returns:
    Array at level `small`.

  Raises:
    InputError: the levels are of different tables or do not nest.
  """
  _check_levels(big, small)
  if big.size is None:
    return collapse(w_big, small)
  if small.size is None or small.size == big.size:
    return w_big
  # Weight each big bucket by its element count so the result is the mean
  # over elements, not over buckets; that is what makes fold . collapse
  # equal the direct collapse.
  dest = jnp.arange(big.size, dtype=jnp.int32) % small.size
  counts = bucket_counts(big)
  total = jax.ops.segment_sum(counts.astype(w_big.dtype) * w_big, dest,
                              num_segments=small.size)
  count = jax.ops.segment_sum(counts, dest, num_segments=small.size)
  return _safe_divide(total, count)


def repeat(w_small, small, big):
  """Expands level `small` to the nested level `big`: `w_big[b] = w[b % m]`.

  `expand(repeat(w, small, big), big) == expand(w, small)` for every `w`.

  Args:
    w_small: array at level `small`.
    small: the smaller `TableSpec`; `small.size` must divide `big.size`.
    big: the larger `TableSpec`.

  Returns:
    Array at level `big`.

  Raises:
    InputError: the levels are of different tables or do not nest.
  """
  _check_levels(big, small)
  if big.size is None:
    return expand(w_small, small)
  if small.size is None or small.size == big.size:
    return w_small
  return jnp.tile(w_small, big.size // small.size)


# ------------------------------------------------------------- pytrees


def _get(params, path):
  node = params
  for depth, key in enumerate(path):
    if not isinstance(node, Mapping) or key not in node:
      raise errors.InputError(
          f"param path {path!r} not found in params (no key {key!r} at "
          f"{path[:depth]!r})")
    node = node[key]
  return node


def _set(params, path, value):
  """A copy of `params` with the leaf at `path` replaced (no mutation)."""
  out = dict(params)
  if len(path) == 1:
    out[path[0]] = value
  else:
    out[path[0]] = _set(params[path[0]], path[1:], value)
  return out


def _check_leaf(leaf, path, spec, at_level):
  """InputError unless `leaf` has the shape `spec` gives it."""
  if at_level and spec.size is not None:
    want = (spec.size,)
  else:
    want = (spec.rows, spec.cols)
  if tuple(np.shape(leaf)) != want:
    raise errors.InputError(
        f"param {path!r} has shape {tuple(np.shape(leaf))}, spec {spec} "
        f"wants {want}")


def _map_tables(params, spec, fn):
  for path, table_spec in spec.items():
    params = _set(params, path, fn(_get(params, path), path, table_spec))
  return params


def _leafwise(spec, fn, at_level):
  """params -> params applying `fn(leaf, table_spec)` to every table `spec` names.

  `at_level` says whether the leaves arrive at their level's size (True) or
  full (False); their shapes are checked against that.
  """
  def apply(params):
    def one(leaf, path, s):
      _check_leaf(leaf, path, s, at_level=at_level)
      return fn(leaf, s)
    return _map_tables(params, spec, one)
  return apply


def _checked(spec):
  spec = dict(spec)
  for s in spec.values():
    _check_spec(s)
  return spec


def subspace(spec):
  """The `Subspace` between full params and the level given by `spec`.

  Args:
    spec: dict mapping param paths to `TableSpec`s; other leaves pass
      through unchanged.

  Returns:
    `Subspace` whose `collapse` maps full params to level params and whose
    `expand` maps level params back to full ones.
  """
  spec = _checked(spec)
  return Subspace(_leafwise(spec, collapse, at_level=False),
                  _leafwise(spec, expand, at_level=True))


def adjoint_map(spec, power=1.0):
  """Level params -> full params by `adjoint(., power)` (power 1: the transpose of collapse).

  Other leaves pass through unchanged. FAIR's `fair.lift` ("adjoint": power
  1, "isometric": power 1/2) maps a level's summed update with it instead of
  with `expand`.
  """
  return _leafwise(_checked(spec), lambda w, s: adjoint(w, s, power), at_level=True)


def rescale_map(spec, power):
  """Level params -> level params by `rescale(., power)`; other leaves unchanged."""
  return _leafwise(_checked(spec), lambda w, s: rescale(w, s, power), at_level=True)


def between(spec_big, spec_small):
  """The `Subspace` between two levels: `collapse` folds, `expand` repeats.

  Args:
    spec_big: spec of the larger level.
    spec_small: spec of the smaller level; same paths as `spec_big`, and
      each table's size divides (or equals) its size in `spec_big`.

  Returns:
    `Subspace` from level `spec_big` params to level `spec_small` params.

  Raises:
    InputError: the specs name different paths or their levels do not nest.
  """
  spec_big, spec_small = dict(spec_big), dict(spec_small)
  if set(spec_big) != set(spec_small):
    differ = sorted(set(spec_big) ^ set(spec_small))
    raise errors.InputError(f"specs name different tables: {differ}")
  for path in spec_big:
    _check_spec(spec_big[path])
    _check_spec(spec_small[path])
    try:
      _check_levels(spec_big[path], spec_small[path])
    except errors.InputError as e:
      raise errors.InputError(f"param {path!r}: {e}") from None

  def collapse_fn(params):
    def one(leaf, path, s):
      _check_leaf(leaf, path, s, at_level=True)
      return fold(leaf, s, spec_small[path])
    return _map_tables(params, spec_big, one)

  def expand_fn(params):
    def one(leaf, path, s):
      _check_leaf(leaf, path, s, at_level=True)
      return repeat(leaf, s, spec_big[path])
    return _map_tables(params, spec_small, one)

  return Subspace(collapse_fn, expand_fn)


def chain(*subspaces):
  """Composes subspaces: collapse in the given order, expand in reverse.

  Args:
    *subspaces: `Subspace`s, each collapsing to where the next one starts.

  Returns:
    One `Subspace` from the first one's large level to the last one's small.
  """
  def collapse_fn(params):
    for s in subspaces:
      params = s.collapse(params)
    return params

  def expand_fn(params):
    for s in reversed(subspaces):
      params = s.expand(params)
    return params

  return Subspace(collapse_fn, expand_fn)


def param_bytes(params):
  """Total bytes of all array leaves of `params`."""
  return sum(int(x.nbytes) for x in jax.tree.leaves(params))


def table_bytes(params, spec):
  """Total bytes of the leaves of `params` that `spec` names."""
  return sum(int(_get(params, path).nbytes) for path in spec)


# ------------------------------------------------------------ spec building


def _mix_seed(*parts):
  """A seed in [0, 2**31) from ints, stable across processes and platforms.

  Python's `hash` of a str is salted per process, so paths go through CRC32;
  the result stays below 2**31 so it fits an int32 array when traced.
  """
  h = 0x243F6A88
  for p in parts:
    h = (h ^ (int(p) & 0xFFFFFFFF)) * 0x9E3779B1 & 0xFFFFFFFF
    h ^= h >> 16
    h = h * 0x85EBCA6B & 0xFFFFFFFF
    h ^= h >> 13
  return h & 0x7FFFFFFF


def table_seed(path, seed, client_seed=None):
  """The hash seed of table `path` in a run seeded `seed`.

  Args:
    path: the table's param path.
    seed: the run's hash seed.
    client_seed: None for a consistent run; otherwise mixed in so every
      client gets its own hash (the `fair_inconsistent` ablation).

  Returns:
    An int in [0, 2**31).
  """
  parts = [seed, zlib.crc32("/".join(path).encode())]
  if client_seed is not None:
    parts.append(client_seed)
  return _mix_seed(*parts)


def make_spec(shapes, c, seed, exact=False, consistent=True, client_seed=0, layout="hash",
              ladder=None):
  """A subspace spec at compression `c` for the tables in `shapes`.

  Args:
    shapes: dict mapping param paths to `(rows, cols)`.
    c: compression factor >= 1 (1 gives plain tables).
    seed: the run's hash seed; each table's seed is derived from it and its
      path, so tables hash independently.
    exact: sizes `ceil(rows*cols/c)` instead of the power-of-two ladder.
    consistent: if False, `client_seed` is mixed into every table seed.
    client_seed: the client's seed, used only when `consistent` is False.
    layout: `TableSpec.layout` of every table ("hash" or "rank").
    ladder: the run's compressions: if given, sizes come from
      `nested_sizes` over them and `c` (`exact` is then ignored).

  Returns:
    dict mapping each path to its `TableSpec`.

  Raises:
    InputError: a bad `c` or table shape.
  """
  spec = {}
  for path, (rows, cols) in shapes.items():
    path = tuple(path)
    spec[path] = TableSpec(
        rows=int(rows), cols=int(cols),
        seed=table_seed(path, seed, None if consistent else client_seed),
        size=(nested_sizes(rows, cols, tuple(ladder) + (c,))[c] if ladder is not None
              else level_size(rows, cols, c, exact=exact)), layout=layout)
  return spec
