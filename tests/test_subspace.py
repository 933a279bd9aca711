"""Tests for fairjax.subspace: the laws of collapse/expand and pytree specs."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fairjax import errors
from fairjax import hashing
from fairjax import subspace as sub

_ROWS, _COLS, _SEED = 37, 6, 1234
_N = _ROWS * _COLS  # 222: not a power of two, so ladder and exact differ.
_TOL = dict(rtol=1e-5, atol=1e-5)

# Compressions for the law tests: ladder sizes 128, 64, 16, 4, 1 and exact
# sizes 148, 74, 23, 5 (148 -> 74 nests without being a power of two).
_CS = [1, 1.5, 3, 10, 50, 1000]


def _spec(c, exact=False, seed=_SEED, rows=_ROWS, cols=_COLS, layout="hash"):
  size = sub.level_size(rows, cols, c, exact=exact)
  return sub.TableSpec(rows, cols, seed, size, layout if size is not None else "hash")


def _levels():
  """Every distinct (c, exact, layout) level used in the law tests, as specs.

  The laws hold for any bucket map, so the popularity-rank layout must
  satisfy them too: two of its levels (sizes 64 and 16, nested) join the
  element-hash ones.
  """
  hashed = [_spec(c, exact) for c in _CS for exact in (False, True)]
  ranked = [_spec(c, layout="rank") for c in (3, 10)]
  return list(dict.fromkeys(hashed + ranked))


def _nested_pairs():
  """(big, small) pairs of distinct levels where small's size divides big's."""
  pairs = []
  for big, small in itertools.permutations(_levels(), 2):
    if small.size is None or (big.size is not None and big.layout != small.layout):
      continue
    if big.size is None or (big.size % small.size == 0
                            and big.size > small.size):
      pairs.append((big, small))
  return pairs


def _ids(spec):
  return "plain" if spec.size is None else f"m{spec.size}-{spec.layout}"


def _pair_ids(pair):
  return f"{_ids(pair[0])}->{_ids(pair[1])}"


def _normal(key, shape):
  return jax.random.normal(jax.random.key(key), shape, jnp.float32)


def _w(spec, key=0):
  shape = (spec.rows, spec.cols) if spec.size is None else (spec.size,)
  return _normal(key, shape)


def _table(spec, key=1):
  return _normal(key, (spec.rows, spec.cols))


def _nonempty(spec):
  return np.asarray(sub.bucket_counts(spec)) > 0


# --------------------------------------------------------------- sizes


def test_level_size_plain_ladder_and_exact():
  assert sub.level_size(37, 6, 1) is None
  assert sub.level_size(37, 6, 1.0, exact=True) is None
  assert sub.level_size(37, 6, 2) == 64  # 111 -> 64
  assert sub.level_size(37, 6, 3) == 64  # 74 -> 64
  assert sub.level_size(37, 6, 3, exact=True) == 74
  assert sub.level_size(37, 6, 2, exact=True) == 111
  assert sub.level_size(37, 6, 7, exact=True) == 32  # ceil(31.71)
  assert sub.level_size(37, 6, 1000) == 1
  assert sub.level_size(37, 6, 1000, exact=True) == 1
  assert sub.level_size(1000, 64, 1000) == 64
  assert sub.level_size(1000, 64, 10) == 4096
  # An exact power-of-two quotient lands on its own rung, not one below.
  assert sub.level_size(1024, 64, 4) == 16384
  assert sub.level_size(1024, 64, np.float32(4)) == 16384
  assert sub.level_size(100_000, 64, 3, exact=True) == 2_133_334
  # n*d/c a hair below 2**20: float log2 rounds to exactly 20.0 and would
  # give 2**20, over the budget; the ladder must stay on 2**19.
  assert sub.level_size(1024, 1024, 1 + 2**-52) == 2**19
  assert sub.level_size(1024, 1024, 1 + 2**-52, exact=True) == 2**20


@pytest.mark.parametrize("rows,cols,cs", [(3706, 32, (1, 8, 64, 512)),
                                          (3706, 32, (1, 16, 256, 4096)),
                                          (37, 6, (1.5, 3, 10, 50)), (1682, 64, (2, 3, 7))])
def test_nested_sizes_nest_and_fill_the_budget(rows, cols, cs):
  sizes = sub.nested_sizes(rows, cols, cs)
  assert set(sizes) == set(cs)
  ladder = sorted((c for c in cs if c != 1), reverse=True)  # smallest size first
  for small, big in zip(ladder, ladder[1:]):
    assert sizes[big] % sizes[small] == 0
    # At least 1 - small_budget / big_budget of the budget is used.
    budget = rows * cols / big
    assert budget - sizes[small] < sizes[big] <= budget
  assert sizes[ladder[0]] == max(1, int(rows * cols // ladder[0]))
  # With compressions a power of two apart (the named distributions), never
  # below the power-of-two ladder; other ratios only keep the guarantee above.
  if all(math.log2(b / a).is_integer() for a, b in zip(ladder[1:], ladder)):
    for c in ladder:
      assert sizes[c] >= sub.level_size(rows, cols, c)
  # The nested levels' maps satisfy the laws of nested subspaces.
  small = sub.TableSpec(rows, cols, _SEED, sizes[ladder[0]])
  big = sub.TableSpec(rows, cols, _SEED, sizes[ladder[1]])
  w = _w(small)
  np.testing.assert_allclose(sub.expand(sub.repeat(w, small, big), big),
                             sub.expand(w, small), **_TOL)


@pytest.mark.parametrize("bad", [0.999, 0, -3, float("nan"), float("inf"),
                                 "3", None, True])
def test_level_size_rejects_bad_c(bad):
  with pytest.raises(errors.InputError, match="compression factor"):
    sub.level_size(37, 6, bad)


def test_level_size_rejects_bad_shape():
  with pytest.raises(errors.InputError, match="rows"):
    sub.level_size(0, 6, 2)
  with pytest.raises(errors.InputError, match="cols"):
    sub.level_size(37, 2.5, 2)


@pytest.mark.parametrize("rows,cols", [(37, 6), (1682, 64), (100_000, 64)])
def test_ladder_sizes_nest_and_respect_the_budget(rows, cols):
  cs = [1.01, 1.5, 2, 3, 8, 10, 64, 100, 1000]
  sizes = [sub.level_size(rows, cols, c) for c in cs]
  for c, m in zip(cs, sizes):
    assert m <= max(1, rows * cols / c)
    assert m & (m - 1) == 0
  for m_big, m_small in zip(sizes, sizes[1:]):
    assert m_big >= m_small and m_big % m_small == 0


# ------------------------------------------------------- single tables


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_shapes(spec):
  w, t = _w(spec), _table(spec)
  assert sub.expand(w, spec).shape == (_ROWS, _COLS)
  assert sub.collapse(t, spec).shape == w.shape
  counts = sub.bucket_counts(spec)
  assert counts.shape == w.shape and counts.dtype == jnp.int32
  assert int(counts.sum()) == _N


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_collapse_after_expand_is_identity_on_nonempty_buckets(spec):
  w = _w(spec)
  got = sub.collapse(sub.expand(w, spec), spec)
  nonempty = _nonempty(spec)
  np.testing.assert_allclose(got, np.where(nonempty, w, 0), **_TOL)


def test_some_levels_do_have_empty_buckets():
  # Otherwise the "empty buckets -> 0" half of the law above is untested.
  spec = _spec(1.5, exact=True)
  assert not _nonempty(spec).all()


def test_rank_layout_gives_the_top_rows_buckets_of_their_own():
  spec = _spec(3, layout="rank")  # 64 buckets, 6 columns: rows 0..9 fit
  b, _ = sub._row_buckets(spec, jnp.arange(_ROWS))  # pylint: disable=protected-access
  b = np.asarray(b)
  top = spec.size // _COLS
  assert len(set(b[:top].ravel().tolist())) == top * _COLS
  # Every bucket holds exactly one element of the top rows (64 = 10 * 6 + 4:
  # the last 4 buckets are the first ones the 11th row reaches).
  np.testing.assert_array_equal(b.ravel(), np.arange(_ROWS * _COLS) % spec.size)


def test_expand_matches_definition():
  spec = _spec(3, exact=True)
  w = np.asarray(_w(spec))
  t = np.asarray(sub.expand(jnp.asarray(w), spec))
  for i, j in [(0, 0), (5, 3), (36, 5)]:
    b = int(hashing.bucket(i, j, spec.seed, spec.size))
    g = float(hashing.element_sign(i, j, spec.seed))
    assert t[i, j] == g * w[b]


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_expand_collapse_is_an_orthogonal_projection(spec):
  x, y = _table(spec, 1), _table(spec, 2)
  proj = lambda t: sub.expand(sub.collapse(t, spec), spec)
  px, py = proj(x), proj(y)
  np.testing.assert_allclose(proj(px), px, **_TOL)  # idempotent
  np.testing.assert_allclose(jnp.vdot(px, y), jnp.vdot(x, py), **_TOL)
  # Residual orthogonal to the subspace: that is the least-squares property.
  np.testing.assert_allclose(jnp.vdot(x - px, py), 0.0, atol=1e-4)


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_adjoint_is_the_transpose_of_collapse(spec):
  # <collapse(T), w> = <T, adjoint(w)> for every T and w.
  t, w = _table(spec, 3), _w(spec, 4)
  np.testing.assert_allclose(jnp.vdot(sub.collapse(t, spec), w),
                             jnp.vdot(t, sub.adjoint(w, spec)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_adjoint_of_a_gradient_is_its_projection(spec):
  # For a loss f(P w), grad_w = P^T grad_T, and adjoint(grad_w) is the
  # orthogonal projection of grad_T; expand(grad_w) is P P^T grad_T, which
  # is longer by the bucket counts.
  g = _table(spec, 5)
  grad_w = jax.grad(lambda w: jnp.vdot(sub.expand(w, spec), g))(_w(spec))
  proj = sub.expand(sub.collapse(g, spec), spec)
  np.testing.assert_allclose(sub.adjoint(grad_w, spec), proj, **_TOL)
  if spec.size is not None and spec.size < _N:
    assert jnp.linalg.norm(sub.expand(grad_w, spec)) > 1.2 * jnp.linalg.norm(proj)


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_isometric_lift_preserves_norms_and_powers_interpolate(spec):
  w = jnp.where(jnp.asarray(_nonempty(spec)), _w(spec, 6), 0)
  np.testing.assert_allclose(jnp.linalg.norm(sub.adjoint(w, spec, 0.5)), jnp.linalg.norm(w),
                             rtol=1e-5)
  np.testing.assert_allclose(sub.adjoint(w, spec, 0.0), sub.expand(w, spec), **_TOL)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_rescaled_view_is_the_left_inverse_of_the_lift(spec, power):
  # fair.view="lift": a client holding rescale(collapse(T), p) sees exactly
  # its own update u after the server lifts it with adjoint(u, p).
  w, keep = _w(spec), _nonempty(spec)
  back = sub.rescale(sub.collapse(sub.adjoint(w, spec, power), spec), spec, power)
  np.testing.assert_allclose(np.where(keep, back, 0), np.where(keep, w, 0), **_TOL)
  # ... and the lift after the view is the same projection at every power.
  t = _table(spec)
  proj = sub.expand(sub.collapse(t, spec), spec)
  np.testing.assert_allclose(
      sub.adjoint(sub.rescale(sub.collapse(t, spec), spec, power), spec, power), proj, **_TOL)


def test_isometric_view_keeps_the_scale_of_the_entries():
  # Bucket means of c random-signed entries shrink by about sqrt(c); the
  # isometric view (power 1/2) undoes that, so dense layers that read the
  # rows see inputs of the same scale at every level.
  spec = _spec(10, rows=2000, cols=16)
  t = _table(spec)
  mean = sub.collapse(t, spec)
  iso = sub.rescale(mean, spec, 0.5)
  assert float(jnp.std(mean)) < 0.5 * float(jnp.std(t))
  np.testing.assert_allclose(float(jnp.std(iso)), float(jnp.std(t)), rtol=0.1)


def test_adjoint_map_maps_named_leaves_only():
  spec = _spec(10)
  params = {"t": _w(spec), "dense": jnp.arange(3.0)}
  out = sub.adjoint_map({("t",): spec})(params)
  np.testing.assert_allclose(out["t"], sub.adjoint(params["t"], spec), **_TOL)
  np.testing.assert_array_equal(out["dense"], params["dense"])


@pytest.mark.parametrize("pair", _nested_pairs(), ids=_pair_ids)
def test_fold_after_collapse_is_collapse(pair):
  big, small = pair
  t = _table(big)
  got = sub.fold(sub.collapse(t, big), big, small)
  np.testing.assert_allclose(got, sub.collapse(t, small), **_TOL)


@pytest.mark.parametrize("pair", _nested_pairs(), ids=_pair_ids)
def test_expand_after_repeat_is_expand(pair):
  big, small = pair
  w = _w(small)
  got = sub.expand(sub.repeat(w, small, big), big)
  np.testing.assert_allclose(got, sub.expand(w, small), **_TOL)


@pytest.mark.parametrize("pair", _nested_pairs(), ids=_pair_ids)
def test_fold_after_repeat_is_identity_on_nonempty_buckets(pair):
  big, small = pair
  w = _w(small)
  got = sub.fold(sub.repeat(w, small, big), big, small)
  np.testing.assert_allclose(got, np.where(_nonempty(small), w, 0), **_TOL)


@pytest.mark.parametrize("pair", _nested_pairs(), ids=_pair_ids)
def test_spans_nest(pair):
  # A table in the small level's span is reproduced exactly by the big one.
  big, small = pair
  t = sub.expand(_w(small), small)
  np.testing.assert_allclose(sub.expand(sub.collapse(t, big), big), t, **_TOL)


def test_from_plain_level_fold_is_collapse_and_repeat_is_expand():
  plain, small = _spec(1), _spec(3, exact=True)
  t, w = _table(plain), _w(small)
  np.testing.assert_array_equal(sub.fold(t, plain, small),
                                sub.collapse(t, small))
  np.testing.assert_array_equal(sub.repeat(w, small, plain),
                                sub.expand(w, small))


def test_fold_needs_signless_weights_because_signs_agree_across_levels():
  # The same element has the same sign at every level; a table built from
  # one element's sign at the small level must fold back to a single
  # non-negative bucket value (no sign flip hidden in the fold).
  big, small = _spec(2), _spec(8)
  t = sub.expand(jnp.ones(small.size), small)
  np.testing.assert_allclose(sub.fold(sub.collapse(t, big), big, small),
                             np.where(_nonempty(small), 1.0, 0.0), **_TOL)


def test_levels_that_do_not_nest_raise():
  a, b = _spec(3, exact=True), _spec(7, exact=True)  # 74 and 32
  with pytest.raises(errors.InputError, match="does not divide"):
    sub.fold(_w(a), a, b)
  with pytest.raises(errors.InputError, match="does not divide"):
    sub.repeat(_w(b), b, a)
  with pytest.raises(errors.InputError, match="larger plain"):
    sub.fold(_w(a), a, _spec(1))
  other_seed = _spec(8, seed=_SEED + 1)
  with pytest.raises(errors.InputError, match="seed"):
    sub.fold(_w(_spec(2)), _spec(2), other_seed)


def test_maps_are_jittable_with_static_specs():
  spec, small = _spec(3), _spec(50)
  w, t = _w(spec), _table(spec)
  for fn, arg in [(lambda x: sub.expand(x, spec), w),
                  (lambda x: sub.collapse(x, spec), t),
                  (lambda x: sub.fold(x, spec, small), w),
                  (lambda x: sub.repeat(x, small, spec), _w(small))]:
    np.testing.assert_allclose(jax.jit(fn)(arg), fn(arg), **_TOL)


# --------------------------------------------------------------- lookup


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_lookup_equals_rows_of_expand(spec):
  w = _w(spec)
  ids = jnp.array([0, 5, 36, 5, 17], jnp.int32)
  want = sub.expand(w, spec)[ids]
  np.testing.assert_array_equal(sub.lookup(w, spec, ids), want)
  np.testing.assert_array_equal(
      jax.jit(lambda w, i: sub.lookup(w, spec, i))(w, ids), want)
  # Any shape of ids: a [batch, negatives] block of rows.
  chex.assert_shape(sub.lookup(w, spec, ids.reshape(1, 5)), (1, 5, _COLS))


def test_lookup_with_static_spec_and_traced_seed():
  spec = _spec(10)
  w, ids = _w(spec), jnp.array([3, 1, 4], jnp.int32)
  lookup = jax.jit(sub.lookup, static_argnums=1)
  np.testing.assert_array_equal(lookup(w, spec, ids), sub.lookup(w, spec, ids))
  # Per-client seeds (the inconsistent ablation) can be traced under vmap:
  # only rows, cols and size must be static.
  seeds = jnp.array([7, 8, 9], jnp.int32)
  got = jax.vmap(lambda s: sub.lookup(w, spec._replace(seed=s), ids))(seeds)
  for k, s in enumerate((7, 8, 9)):
    np.testing.assert_array_equal(got[k],
                                  sub.lookup(w, spec._replace(seed=s), ids))


def test_lookup_gradient_lives_in_the_small_space():
  spec = _spec(10)
  ids = jnp.array([1, 2, 2], jnp.int32)
  grad = jax.grad(lambda w: jnp.sum(sub.lookup(w, spec, ids)))(_w(spec))
  assert grad.shape == (spec.size,)
  full = jax.grad(lambda w: jnp.sum(sub.expand(w, spec)[ids]))(_w(spec))
  np.testing.assert_allclose(grad, full, **_TOL)


@pytest.mark.parametrize("spec", _levels(), ids=_ids)
def test_lookup_add_is_the_transpose_of_lookup(spec):
  # The sparse SGD step's scatter: w + J^T r, with J the lookup's Jacobian.
  # Repeated ids (and colliding elements) must add up.
  w = _w(spec)
  ids = jnp.array([[0, 5, 36], [5, 17, 5]], jnp.int32)
  rows = _normal(3, ids.shape + (_COLS,))
  _, vjp = jax.vjp(lambda w: sub.lookup(w, spec, ids), w)
  np.testing.assert_allclose(sub.lookup_add(w, spec, ids, rows), w + vjp(rows)[0], **_TOL)
  # With a traced seed, as under the inconsistent ablation's vmap.
  got = jax.jit(lambda s: sub.lookup_add(w, spec._replace(seed=s), ids, rows))(spec.seed)
  np.testing.assert_allclose(got, sub.lookup_add(w, spec, ids, rows), **_TOL)


def _sub_jaxprs(param):
  if hasattr(param, "eqns"):  # Jaxpr
    yield param
  elif hasattr(param, "jaxpr") and hasattr(param.jaxpr, "eqns"):  # Closed
    yield param.jaxpr
  elif isinstance(param, (tuple, list)):
    for p in param:
      yield from _sub_jaxprs(p)


def _avals(jaxpr):
  """Every abstract value in a jaxpr, sub-jaxprs (jit, cond, ...) included."""
  for var in itertools.chain(jaxpr.invars, jaxpr.constvars):
    yield var.aval
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield var.aval
    for param in eqn.params.values():
      for inner in _sub_jaxprs(param):
        yield from _avals(inner)


@pytest.mark.parametrize("c", [1, 8, 1000])
def test_lookup_never_materialises_the_full_table(c):
  spec = _spec(c, rows=100_000, cols=64)
  n_ids = 16
  ids = jnp.arange(n_ids, dtype=jnp.int32)
  w = jax.ShapeDtypeStruct(
      (spec.rows, spec.cols) if spec.size is None else (spec.size,),
      jnp.float32)
  closed = jax.make_jaxpr(lambda w, i: sub.lookup(w, spec, i))(w, ids)
  sizes = [math.prod(a.shape) for a in _avals(closed.jaxpr)]
  assert len(sizes) > 3  # the walk saw the computation
  # Apart from the table passed in, nothing is bigger than the rows asked
  # for; in particular no [rows, cols] hash or sign array.
  others = [s for s in sizes if s != math.prod(w.shape)]
  assert max(others) <= n_ids * spec.cols
  if spec.size is not None:
    assert max(sizes) < spec.rows * spec.cols


# -------------------------------------------------------------- pytrees


def _params():
  return {
      "item": {"embedding": _normal(1, (_ROWS, _COLS))},
      "user": {"embedding": _normal(2, (11, _COLS))},
      "mlp": {"kernel": _normal(3, (2 * _COLS, 4)), "bias": jnp.zeros(4)},
  }


_SHAPES = {("item", "embedding"): (_ROWS, _COLS),
           ("user", "embedding"): (11, _COLS)}


def test_subspace_collapses_named_leaves_and_passes_the_rest():
  params = _params()
  spec = sub.make_spec(_SHAPES, c=4, seed=0)
  level = sub.subspace(spec).collapse(params)
  item_spec = spec[("item", "embedding")]
  chex.assert_shape(level["item"]["embedding"], (item_spec.size,))
  chex.assert_trees_all_equal(level["mlp"], params["mlp"])
  np.testing.assert_array_equal(
      level["item"]["embedding"],
      sub.collapse(params["item"]["embedding"], item_spec))
  back = sub.subspace(spec).expand(level)
  chex.assert_trees_all_equal_shapes(back, params)
  chex.assert_trees_all_equal(back["mlp"], params["mlp"])
  # The input pytree is not mutated.
  chex.assert_shape(params["item"]["embedding"], (_ROWS, _COLS))


def test_subspace_is_jittable():
  params = _params()
  s = sub.subspace(sub.make_spec(_SHAPES, c=4, seed=0))
  chex.assert_trees_all_close(jax.jit(s.collapse)(params), s.collapse(params),
                              **_TOL)
  level = s.collapse(params)
  chex.assert_trees_all_close(jax.jit(s.expand)(level), s.expand(level),
                              **_TOL)


def test_plain_spec_is_identity():
  params = _params()
  s = sub.subspace(sub.make_spec(_SHAPES, c=1, seed=0))
  chex.assert_trees_all_equal(s.collapse(params), params)
  chex.assert_trees_all_equal(s.expand(params), params)


@pytest.mark.parametrize("c_mid,c_small", [(1, 4), (2, 8), (4, 4), (2, 1000)])
def test_chain_of_between_equals_direct_subspace(c_mid, c_small):
  params = _params()
  mid = sub.make_spec(_SHAPES, c=c_mid, seed=0)
  small = sub.make_spec(_SHAPES, c=c_small, seed=0)
  chained = sub.chain(sub.subspace(mid), sub.between(mid, small))
  direct = sub.subspace(small)
  chex.assert_trees_all_close(chained.collapse(params),
                              direct.collapse(params), **_TOL)
  level = direct.collapse(params)
  chex.assert_trees_all_close(chained.expand(level), direct.expand(level),
                              **_TOL)


def test_between_rejects_non_nesting_or_mismatched_specs():
  a = sub.make_spec(_SHAPES, c=3, seed=0, exact=True)
  b = sub.make_spec(_SHAPES, c=7, seed=0, exact=True)
  with pytest.raises(errors.InputError, match="item"):
    sub.between(a, b)
  with pytest.raises(errors.InputError, match="different tables"):
    sub.between(a, {("item", "embedding"): a[("item", "embedding")]})


def test_unknown_path_and_wrong_shape_raise():
  spec = {("item", "embeding"): _spec(4)}
  with pytest.raises(errors.InputError, match="embeding"):
    sub.subspace(spec).collapse(_params())
  spec = {("user", "embedding"): _spec(4)}  # user table has 11 rows
  with pytest.raises(errors.InputError, match="user"):
    sub.subspace(spec).collapse(_params())


def test_bytes():
  params = _params()
  spec = sub.make_spec(_SHAPES, c=4, seed=0)
  dense = (2 * _COLS * 4 + 4) * 4
  tables = (_ROWS + 11) * _COLS * 4
  assert sub.param_bytes(params) == dense + tables
  assert sub.table_bytes(params, spec) == tables
  level = sub.subspace(spec).collapse(params)
  hashed = sum(s.size for s in spec.values()) * 4
  assert sub.table_bytes(level, spec) == hashed
  assert sub.param_bytes(level) == dense + hashed


def test_make_spec_seeds():
  spec = sub.make_spec(_SHAPES, c=4, seed=0)
  seeds = [s.seed for s in spec.values()]
  assert len(set(seeds)) == len(seeds)  # tables hash differently
  assert all(0 <= s < 2**31 for s in seeds)
  # Same seed, any client, any level: the same hash (consistent).
  for c in (2, 8, 1000):
    for client in (0, 5):
      other = sub.make_spec(_SHAPES, c=c, seed=0, client_seed=client)
      assert [s.seed for s in other.values()] == seeds
  assert [s.seed for s in sub.make_spec(_SHAPES, 4, seed=1).values()] != seeds
  # Inconsistent: each client has its own seeds, reproducibly.
  inc = [[s.seed for s in sub.make_spec(_SHAPES, 4, seed=0, consistent=False,
                                        client_seed=k).values()]
         for k in range(5)]
  assert len({tuple(x) for x in inc}) == 5
  assert inc[3] == [s.seed for s in sub.make_spec(
      _SHAPES, 4, seed=0, consistent=False, client_seed=3).values()]


def test_make_spec_sizes():
  spec = sub.make_spec(_SHAPES, c=3, seed=0, exact=True)
  assert spec[("item", "embedding")].size == 74
  assert spec[("user", "embedding")].size == 22  # ceil(66 / 3)
  assert sub.make_spec(_SHAPES, c=3, seed=0)[("item", "embedding")].size == 64
  with pytest.raises(errors.InputError, match="compression"):
    sub.make_spec(_SHAPES, c=0.5, seed=0)
