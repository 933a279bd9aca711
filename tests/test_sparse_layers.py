"""Sampled training equals dense training where it should."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparse import layers
from sparse import model as model_lib
from sparse import tasks


def _setup(n=40, d=8, b=6, seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  w = jax.random.normal(k[0], (n, d))
  bias = jax.random.normal(k[1], (n,)) * 0.1
  h = jax.random.normal(k[2], (b, d))
  y = jax.random.randint(k[3], (b,), 0, n)
  return w, bias, h, y


def test_sampled_gradient_is_dense_gradient_restricted_to_active_rows():
  w, bias, h, y = _setup()
  n = w.shape[0]
  active = jnp.unique(jnp.concatenate([y, jnp.arange(0, n, 3)]))
  pos = jnp.searchsorted(active, y)[:, None]
  mask = jnp.ones(h.shape[0])

  def sampled(w_rows, b_rows):
    return layers.softmax_xent(layers.shared_logits(h, w_rows, b_rows), pos,
                               mask)

  def dense_masked(w_all, b_all):
    logits = h @ w_all.T + b_all
    on = jnp.zeros(n, bool).at[active].set(True)
    logits = jnp.where(on, logits, -jnp.inf)
    return layers.softmax_xent(logits, y[:, None], mask)

  gs = jax.grad(sampled, argnums=(0, 1))(w[active], bias[active])
  gd = jax.grad(dense_masked, argnums=(0, 1))(w, bias)
  chex.assert_trees_all_close(gs[0], gd[0][active], atol=1e-6)
  chex.assert_trees_all_close(gs[1], gd[1][active], atol=1e-6)
  off = jnp.ones(n, bool).at[active].set(False)
  assert float(jnp.abs(gd[0][off]).max()) == 0.0


def test_per_example_logits_match_shared():
  w, bias, h, _ = _setup()
  rows = jnp.arange(w.shape[0])
  inv = jnp.tile(rows, (h.shape[0], 1))
  chex.assert_trees_all_close(
      layers.per_example_logits(h, w, bias, inv),
      layers.shared_logits(h, w, bias), atol=1e-5)


def test_lazy_adam_with_all_rows_equals_optax_adam():
  w, _, _, _ = _setup()
  g = jax.random.normal(jax.random.key(9), w.shape)
  cfg = layers.AdamConfig(learning_rate=0.01)
  opt = optax.adam(0.01)
  st = opt.init(w)
  p, m, v = w, jnp.zeros_like(w), jnp.zeros_like(w)
  ref = w
  for t in range(1, 4):
    p, m, v = layers.lazy_adam_rows(p, m, v, jnp.arange(w.shape[0]), g * t,
                                    jnp.asarray(t), cfg)
    u, st = opt.update(g * t, st, ref)
    ref = optax.apply_updates(ref, u)
  chex.assert_trees_all_close(p, ref, atol=1e-6)


def test_lazy_adam_leaves_untouched_rows_alone():
  w, _, _, _ = _setup()
  rows = jnp.array([1, 5, w.shape[0]])   # last one is padding
  g = jnp.ones((3, w.shape[1]))
  cfg = layers.AdamConfig()
  p, m, _ = layers.lazy_adam_rows(w, jnp.zeros_like(w), jnp.zeros_like(w),
                                  rows, g, jnp.asarray(1), cfg)
  changed = jnp.any(p != w, axis=1)
  np.testing.assert_array_equal(np.flatnonzero(changed), [1, 5])
  assert float(jnp.abs(m[0]).max()) == 0.0


def test_sampled_hidden_layer_with_all_active_is_dense():
  w, bias, h, _ = _setup()
  full = layers.sampled_dense(h, w, bias, jnp.ones((h.shape[0], w.shape[0])),
                              "relu")
  chex.assert_trees_all_close(full, jax.nn.relu(h @ w.T + bias), atol=1e-6)
  g = jax.grad(lambda w_: layers.sampled_dense(
      h, w_, bias, jnp.zeros((h.shape[0], w.shape[0])).at[:, :3].set(1.0),
      "relu").sum())(w)
  assert float(jnp.abs(g[3:]).max()) == 0.0


def test_one_step_with_every_neuron_active_equals_dense_softmax_training():
  data = tasks.synthetic_xc(30, input_dim=200, n_train=64, n_test=8, seed=1)
  specs = lambda s, size: [model_lib.Dense(16),  # pylint: disable=g-long-lambda
                           model_lib.Output(30, sparsity=s, shared_size=size)]
  dense = model_lib.Model(specs(1.0, None), 200, learning_rate=0.01)
  sampled = model_lib.Model(specs(0.5, 30), 200, learning_rate=0.01)
  chex.assert_trees_all_close(dense.state["params"], sampled.state["params"])
  labels = data.y_train.reshape(-1, 1)
  idx = np.arange(32)
  dense.train_batch(data.x_train, labels, idx, 32)
  _, active = sampled.train_batch(data.x_train, labels, idx, 32)
  assert sorted(active.tolist()) == list(range(30))
  # Dense Adam, and the reference softmax, in plain JAX + optax.
  chex.assert_trees_all_close(sampled.state["params"], dense.state["params"],
                              atol=1e-5, rtol=1e-5)

  ref = model_lib.Model(specs(1.0, None), 200, learning_rate=0.01)
  params = ref.state["params"]
  from sparse import data as data_lib  # pylint: disable=g-import-not-at-top
  ib = data_lib.input_batch(data.x_train, idx, 32, 200)

  def loss(p):
    e = p["in"]["w"][ib.rows.clip(0, 199)] * (ib.rows < 200)[:, None]
    h = jax.nn.relu(layers.embed_bag(e, ib.inv, ib.vals) + p["in"]["b"])
    logits = h @ p["out"]["w"].T + p["out"]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.asarray(data.y_train[idx])).mean()

  opt = optax.adam(0.01)
  u, _ = opt.update(jax.grad(loss)(params), opt.init(params), params)
  want = optax.apply_updates(params, u)
  # Adam touches only the input rows the batch used: compare those.
  rows = ib.rows[ib.rows < 200]
  chex.assert_trees_all_close(dense.state["params"]["out"], want["out"],
                              atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(dense.state["params"]["in"]["w"][rows],
                              want["in"]["w"][rows], atol=1e-5, rtol=1e-5)


def test_lazy_adam_catch_up_equals_dense_adam_with_zero_gradients():
  """Rows outside the active set move as dense Adam moves them (g = 0)."""
  w, _, _, _ = _setup(n=6, d=4)
  cfg = layers.AdamConfig(learning_rate=0.01, eps=0.0)
  opt = optax.adam(0.01, eps=0.0)
  st = opt.init(w)
  ref = w
  p, m, v = w, jnp.zeros_like(w), jnp.zeros_like(w)
  last = jnp.zeros(w.shape[0], jnp.int32)
  rng = np.random.default_rng(0)
  for t in range(1, 40):
    rows = np.flatnonzero(rng.random(w.shape[0]) < 0.3)
    if t == 1:
      rows = np.arange(w.shape[0])   # every row gets moments at the start
    g_all = jnp.zeros_like(w).at[rows].set(
        jnp.asarray(rng.normal(size=(len(rows), w.shape[1])), jnp.float32))
    p, m, v, last = layers.lazy_adam_rows(p, m, v, jnp.asarray(rows),
                                          g_all[rows], jnp.asarray(t), cfg,
                                          last)
    u, st = opt.update(g_all, st, ref)
    ref = optax.apply_updates(ref, u)
  p, m, v = layers.catch_up_rows(p, m, v, last, jnp.asarray(39), cfg)
  chex.assert_trees_all_close(p, ref, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_close(m, st[0].mu, atol=1e-6, rtol=1e-5)
  chex.assert_trees_all_close(v, st[0].nu, atol=1e-6, rtol=1e-5)


def test_sampling_correction_with_every_neuron_is_dense_softmax():
  w, bias, h, y = _setup()
  n = w.shape[0]
  # Labels first, then the rest as the "uniform" top-up: nothing left over.
  labels = np.unique(np.asarray(y))
  rest = np.setdiff1d(np.arange(n), labels)
  active = np.concatenate([labels, rest])
  corr = model_lib.sampling_offsets(n, len(labels), n, True)
  np.testing.assert_array_equal(corr, 0.0)
  pos = jnp.asarray(np.searchsorted(labels, np.asarray(y)))[:, None]
  mask = jnp.ones(h.shape[0])
  got = layers.softmax_xent(
      layers.shared_logits(h, w[active], bias[active]) + corr, pos, mask)
  want = optax.softmax_cross_entropy_with_integer_labels(
      h @ w.T + bias, y).mean()
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_sampling_correction_estimates_the_full_partition_function():
  """Uniform top-up with log(U/k) offsets: logsumexp matches on average."""
  rng = np.random.default_rng(0)
  n, n_fixed, k = 2000, 50, 250
  logits = rng.normal(size=n).astype(np.float32)
  corr = model_lib.sampling_offsets(k, n_fixed, n, True)
  assert np.allclose(corr[n_fixed:], np.log((n - n_fixed) / (k - n_fixed)))
  est = []
  for _ in range(1000):
    drawn = rng.choice(np.arange(n_fixed, n), k - n_fixed, replace=False)
    z = np.exp(logits[:n_fixed]).sum() + np.exp(
        logits[drawn] + corr[n_fixed:]).sum()
    est.append(z)
  np.testing.assert_allclose(np.mean(est), np.exp(logits).sum(), rtol=0.02)
