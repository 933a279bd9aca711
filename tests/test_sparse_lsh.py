"""LSH families: collision probability rises with similarity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparse import lsh


def _pairs(rng, n, dim, cos):
  x = rng.standard_normal((n, dim))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  z = rng.standard_normal((n, dim))
  z -= (z * x).sum(1, keepdims=True) * x
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  return x, cos * x + np.sqrt(1 - cos**2) * z


@pytest.mark.parametrize("family", ["dwta", "srp"])
def test_collision_rate_rises_with_similarity(family):
  fam = lsh.FAMILIES[family]
  params = fam.init(jax.random.key(0), 64, 32, 2)
  rng = np.random.default_rng(0)
  rates = []
  for cos in (0.0, 0.3, 0.6, 0.9, 0.99):
    x, y = _pairs(rng, 400, 64, cos)
    cx = fam.hash(params, jnp.asarray(x, jnp.float32))
    cy = fam.hash(params, jnp.asarray(y, jnp.float32))
    rates.append(float(jnp.mean(cx == cy)))   # over 400 pairs x 32 tables
  assert all(a < b for a, b in zip(rates, rates[1:])), rates
  assert rates[-1] > 0.6 and rates[0] < 0.3, rates


def test_codes_in_range_and_host_matches_jax():
  params = lsh.dwta_init(jax.random.key(1), 50, 6, 3)
  w = np.random.default_rng(1).standard_normal((300, 50)).astype(np.float32)
  codes = np.asarray(lsh.dwta_hash(params, w))
  assert codes.shape == (300, 6)
  assert codes.min() >= 0 and codes.max() < lsh.num_buckets(params)
  np.testing.assert_array_equal(lsh.dwta_hash_host(params, w), codes)


def test_sparse_dwta_matches_dense_when_bins_are_full():
  params = lsh.dwta_init(jax.random.key(2), 16, 4, 2, bin_size=4)
  rng = np.random.default_rng(2)
  dense = rng.standard_normal((5, 16)).astype(np.float32) + 10  # no zeros
  ids = np.tile(np.arange(16), (5, 1))
  got = lsh.dwta_hash_sparse(params, jnp.asarray(ids), jnp.asarray(dense), 16)
  np.testing.assert_array_equal(got, lsh.dwta_hash(params, dense))


def test_sparse_dwta_densifies_empty_bins():
  params = lsh.dwta_init(jax.random.key(3), 1000, 8, 4)
  ids = jnp.array([[3, 70, 512, 999]])
  vals = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  codes = lsh.dwta_hash_sparse(params, ids, vals, 1000)
  # Similar sparse vectors (one value perturbed) mostly collide.
  codes2 = lsh.dwta_hash_sparse(params, ids, vals.at[0, 0].set(1.1), 1000)
  assert codes.shape == (1, 8)
  assert float(jnp.mean(codes == codes2)) >= 0.5
