"""Row-sparse Adam and Adagrad (fairjax.rowopt) against optax's dense ones."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fairjax import client as client_lib
from fairjax import models
from fairjax import rowopt

_ROWS, _COLS, _LR = 64, 8, 0.05


@pytest.fixture(params=["sparse", "masked dense"], autouse=True)
def path(request, monkeypatch):
  """Both ways of applying the rule: gathered units, or a masked pass over a small table."""
  monkeypatch.setattr(rowopt, "DENSE_BELOW", 0 if request.param == "sparse" else 10**6)
  return request.param


def _batches(steps, seed=0, n=12):
  """Per step: looked-up units (some past the table: padding) and their gradients."""
  rng = np.random.default_rng(seed)
  out = []
  for t in range(steps):
    units = rng.integers(0, _ROWS // 2 if t % 2 else _ROWS, n)  # repeats, skipped rows
    units[::5] = _ROWS
    out.append((units, rng.normal(size=(n, _COLS)).astype(np.float32)))
  return out


def _dense_grad(units, grads):
  # What jax.grad of a gather gives: the lookups' gradients scattered and added.
  return jnp.zeros((_ROWS, _COLS), jnp.float32).at[units].add(grads, mode="drop")


def _run(name, catch_up, steps=10):
  """(dense params, row params, row state, touched units) after each step."""
  w0 = jnp.asarray(np.random.default_rng(1).normal(size=(_ROWS, _COLS)), jnp.float32)
  dense = {"adam": optax.adam, "adagrad": optax.adagrad}[name](_LR)
  row = rowopt.make(name, _LR, catch_up=catch_up)
  d_step = jax.jit(lambda p, s, g: (lambda u, s2: (optax.apply_updates(p, u), s2))(
      *dense.update(g, s, p)))
  r_step = jax.jit(lambda p, s, c, u, g: rowopt.update(
      row, *rowopt.catch_up(row, p, s, u, c - 1), c, u, g))
  pd, sd, pr, sr = w0, dense.init(w0), w0, rowopt.init(row, w0)
  trace = []
  for t, (units, grads) in enumerate(_batches(steps), start=1):
    before = (pr, sr)
    pd, sd = d_step(pd, sd, _dense_grad(units, grads))
    pr, sr = r_step(pr, sr, jnp.int32(t), jnp.asarray(units), jnp.asarray(grads))
    trace.append((pd, pr, sr, before, np.unique(units[units < _ROWS])))
  return trace, row


# The same arithmetic, but XLA may round one expression differently in two
# programs (a fused multiply-add in one, not in the other): most entries
# agree bit for bit, the others in their last bits.
def _assert_same(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_adam_with_catch_up_equals_dense_adam_on_every_touched_row():
  trace, row = _run("adam", catch_up=True)
  replayed = 0
  for t, (pd, pr, sr, (p_before, s_before), touched) in enumerate(trace, start=1):
    _assert_same(pr[touched], pd[touched])
    # Untouched rows wait (their owed steps are replayed when next touched).
    rest = np.setdiff1d(np.arange(_ROWS), touched)
    np.testing.assert_array_equal(pr[rest], p_before[rest])
    last = np.asarray(s_before["last"])[touched]
    replayed += int(((last > 0) & (last < t - 1)).sum())
  assert replayed > 10  # the catch-up was exercised
  # flush: every row as dense Adam leaves it.
  pd, pr, sr, _, _ = trace[-1]
  assert np.abs(np.asarray(pr) - np.asarray(pd)).max() > 1e-4  # owed steps before the flush
  flushed, _ = rowopt.flush(row, pr, sr, jnp.int32(len(trace)), bound=_ROWS)
  _assert_same(flushed, pd)


def test_lazy_adam_leaves_untouched_rows_and_moments_as_they_were():
  trace, _ = _run("adam", catch_up=False)
  b1, b2, eps = 0.9, 0.999, 1e-8
  for t, (_, pr, sr, (p_before, s_before), touched) in enumerate(trace, start=1):
    rest = np.setdiff1d(np.arange(_ROWS), touched)
    for new, old in ((pr, p_before), (sr["mv"], s_before["mv"])):
      np.testing.assert_array_equal(np.asarray(new)[rest], np.asarray(old)[rest])
    # Touched rows: one Adam step from their own moments, global bias correction.
    units, grads = _batches(len(trace))[t - 1]
    g = np.asarray(_dense_grad(units, grads), np.float64)[touched]
    mv = np.asarray(s_before["mv"], np.float64)[touched]
    m = b1 * mv[:, 0] + (1 - b1) * g
    v = b2 * mv[:, 1] + (1 - b2) * g ** 2
    want = (np.asarray(p_before, np.float64)[touched]
            - _LR * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps))
    np.testing.assert_allclose(np.asarray(pr)[touched], want, rtol=1e-5, atol=1e-6)
  # Lazy Adam is another optimizer: rows that skipped steps differ from dense Adam.
  pd, pr, _, _, touched = trace[-1]
  assert np.abs(np.asarray(pr)[touched] - np.asarray(pd)[touched]).max() > 1e-3


def test_row_adagrad_is_dense_adagrad():
  trace, _ = _run("adagrad", catch_up=False)
  for pd, pr, _, _, _ in trace:
    _assert_same(pr, pd)


def _model(c=None):
  items, dim = 50, 8
  sizes = None if c is None else {n: items * dim // c for n in models.ITEM_TABLES}
  model = models.make_model("neumf", 1, items, dim, (16, 8), item_sizes=sizes,
                            seeds={n: 5 for n in models.ITEM_TABLES})
  params = model.init(jax.random.PRNGKey(0))
  params = {k: {"embedding": v["embedding"] * 30.0} if "embedding" in v else v
            for k, v in params.items()}
  return model, params, client_lib.LocalConfig("bce", items, 4, 4, 3)


@pytest.mark.parametrize("c", [None, 4])
def test_local_update_with_catch_up_is_dense_adam_under_vmap(c):
  # The whole client round: row steps on the item tables, the flush at the
  # end, every other param on optax's Adam; two clients under vmap, one
  # shorter than the other (its extra steps are padding).
  model, params, cfg = _model(c)
  user, shared = models.split_user_params(params, "neumf")
  opt = optax.adam(_LR)
  stack = lambda t: jax.tree.map(lambda x: jnp.stack([x, x * 0.5]), t)
  items = jnp.array([3, 7, 7, 11, 20, 41, 2, 9, 0, 0], jnp.int32)
  masks = jnp.stack([jnp.arange(10) < 8, jnp.arange(10) < 3])
  rngs = jax.random.split(jax.random.PRNGKey(1), 2)
  outs = {}
  for key, table_opt in (("dense", None), ("catch_up", rowopt.make("adam", _LR, True)),
                         ("lazy", rowopt.make("adam", _LR))):
    update = client_lib.make_local_update(model, opt, cfg._replace(table_opt=table_opt))
    outs[key] = jax.jit(jax.vmap(update))(stack(shared), stack(user),
                                          jnp.stack([items, items]), masks, rngs)
  # Gradients are computed by two programs, whose rounding differs a little
  # (and Adam's first steps are sign-like): close, not bitwise.
  chex.assert_trees_all_close(outs["catch_up"], outs["dense"], atol=2e-5, rtol=1e-5)
  diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                          outs["lazy"][0], outs["dense"][0])))
  assert diff > 1e-3  # lazy Adam is not dense Adam


def test_row_adam_step_writes_tables_only_by_scatter(path):
  if path != "sparse":
    pytest.skip("the masked pass is for small tables")
  # No elementwise pass over a table: every table-shaped value of the step
  # is a scatter's result (into the table, its moments, its gradient buffer).
  model, params, cfg = _model()
  opt = optax.adam(_LR)
  cfg = cfg._replace(table_opt=rowopt.make("adam", _LR, catch_up=True))
  state = client_lib.init_opt_state(model, opt, cfg, params)
  args = (jnp.arange(4), jnp.arange(16).reshape(4, 4), jnp.ones(4, bool))
  jaxpr = jax.make_jaxpr(client_lib.make_step(model, opt, cfg))(params, state, *args).jaxpr
  table = params["item_gmf"]["embedding"].shape
  prims = {e.primitive.name for e in jaxpr.eqns for v in e.outvars if v.aval.shape == table}
  assert prims and prims <= {"scatter", "scatter-add"}, prims
  dense = jax.make_jaxpr(client_lib.make_step(model, opt, cfg._replace(table_opt=None)))(
      params, opt.init(params), *args).jaxpr
  assert {e.primitive.name for e in dense.eqns for v in e.outvars
          if v.aval.shape == table} - {"scatter", "scatter-add"}


def test_sparse_tables_by_optimizer_and_penalty():
  model, _, cfg = _model()
  adam = cfg._replace(table_opt=rowopt.make("adam", _LR))
  assert client_lib.sparse_tables(model, adam) == ("item_gmf", "item_mlp")
  assert client_lib.sparse_tables(model, cfg._replace(table_lr=0.5)) == (
      "user_gmf", "item_gmf", "user_mlp", "item_mlp")
  # A dense penalty gradient: adam steps densely, sgd keeps its row step.
  penalty = lambda p, a: 0.0
  assert client_lib.sparse_tables(model, adam, penalty) == ()
  assert client_lib.sparse_tables(model, cfg._replace(table_lr=0.5), penalty)
