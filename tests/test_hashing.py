"""Tests for fairjax.hashing: the element hash, sign and bucket."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fairjax import hashing

# Enough elements that sampling noise in the statistical tests is small:
# 1000 x 64 = 64,000 elements.
_ROWS, _COLS = 1000, 64


def _grid(rows=_ROWS, cols=_COLS):
  return (jnp.arange(rows, dtype=jnp.int32)[:, None],
          jnp.arange(cols, dtype=jnp.int32)[None, :])


def _murmur3_32(data, seed):
  """Reference MurmurHash3 x86_32 in plain Python, straight from the spec."""
  mask = 0xFFFFFFFF
  rotl = lambda x, r: ((x << r) | (x >> (32 - r))) & mask
  h = seed & mask
  for k in range(0, len(data) - len(data) % 4, 4):
    block = int.from_bytes(data[k:k + 4], "little")
    block = rotl(block * 0xCC9E2D51 & mask, 15) * 0x1B873593 & mask
    h = (rotl(h ^ block, 13) * 5 + 0xE6546B64) & mask
  tail = data[len(data) - len(data) % 4:]
  if tail:
    block = int.from_bytes(tail, "little")
    h ^= rotl(block * 0xCC9E2D51 & mask, 15) * 0x1B873593 & mask
  h ^= len(data)
  h ^= h >> 16
  h = h * 0x85EBCA6B & mask
  h ^= h >> 13
  h = h * 0xC2B2AE35 & mask
  return h ^ (h >> 16)


def test_reference_murmur3_matches_published_vectors():
  # SMHasher / Wikipedia test vectors, so the reference itself is trusted.
  assert _murmur3_32(b"", 0) == 0
  assert _murmur3_32(b"", 1) == 0x514E28B7
  assert _murmur3_32(b"", 0xFFFFFFFF) == 0x81F16F39
  assert _murmur3_32(b"\0\0\0\0", 0) == 0x2362F9DE
  assert _murmur3_32(b"aaaa", 0x9747B28C) == 0x5A97808A
  assert _murmur3_32(b"Hello, world!", 0x9747B28C) == 0x24884CBA


@pytest.mark.parametrize("row,col,seed", [
    (0, 0, 0), (1, 2, 3), (36, 5, 12345), (2**31 - 1, 63, 2**31 - 1),
    (33_554_431, 63, 7), (5, 2**31 - 1, 0xFFFFFFFF)])
def test_element_hash_is_murmur3_of_row_and_col(row, col, seed):
  # uint32 arithmetic in jnp must wrap exactly like the C reference; a
  # silent promotion or overflow would show here first.
  want = _murmur3_32(row.to_bytes(4, "little") + col.to_bytes(4, "little"),
                     seed)
  assert int(hashing.element_hash(row, col, seed)) == want
  assert int(hashing.element_hash(jnp.int32(row), jnp.int32(col),
                                  seed)) == want


def test_dtypes_and_broadcasting():
  i, j = _grid(7, 3)
  h = hashing.element_hash(i, j, 5)
  g = hashing.element_sign(i, j, 5)
  b = hashing.bucket(i, j, 5, 10)
  assert h.shape == g.shape == b.shape == (7, 3)
  assert h.dtype == jnp.uint32
  assert g.dtype == jnp.float32
  assert b.dtype == jnp.int32


def test_deterministic_and_jit_equal():
  i, j = _grid(37, 6)
  eager = hashing.element_hash(i, j, 11)
  np.testing.assert_array_equal(eager, hashing.element_hash(i, j, 11))
  jitted = jax.jit(hashing.element_hash)(i, j, jnp.int32(11))
  np.testing.assert_array_equal(eager, jitted)
  np.testing.assert_array_equal(
      hashing.element_sign(i, j, 11),
      jax.jit(hashing.element_sign)(i, j, jnp.int32(11)))


def test_traced_seed_under_vmap_matches_static_seed():
  i, j = _grid(37, 6)
  seeds = jnp.arange(4, dtype=jnp.int32)
  got = jax.vmap(lambda s: hashing.bucket(i, j, s, 50))(seeds)
  for k in range(4):
    np.testing.assert_array_equal(got[k], hashing.bucket(i, j, k, 50))


def test_seed_sensitivity():
  i, j = _grid()
  m = 64
  a = hashing.bucket(i, j, 0, m)
  for seed in (1, 2, 1 << 20):
    b = hashing.bucket(i, j, seed, m)
    # Independent hashes agree on about 1/m of the elements.
    assert abs(float(jnp.mean(a == b)) - 1 / m) < 0.01
    agree = float(jnp.mean(hashing.element_sign(i, j, 0)
                           == hashing.element_sign(i, j, seed)))
    assert abs(agree - 0.5) < 0.02


def test_row_and_col_are_not_interchangeable():
  i, j = _grid(64, 64)
  assert float(jnp.mean(hashing.element_hash(i, j, 3)
                        == hashing.element_hash(j, i, 3))) < 0.05


@pytest.mark.parametrize("m", [37, 64, 100, 1024])
@pytest.mark.parametrize("seed", [0, 9])
def test_bucket_occupancy_is_roughly_uniform(m, seed):
  i, j = _grid()
  b = hashing.bucket(i, j, seed, m)
  counts = np.bincount(np.asarray(b).ravel(), minlength=m)
  assert counts.size == m
  expected = b.size / m
  chi2 = float(np.sum((counts - expected) ** 2 / expected))
  dof = m - 1
  # Chi-square has mean dof and sd sqrt(2 dof); 6 sd is loose enough to
  # never flake and tight enough to catch a structured hash.
  assert chi2 < dof + 6 * np.sqrt(2 * dof), chi2


def test_bucket_range_at_large_indices_and_sizes():
  # Row/col near int32 limits and m up to 2**31 (tables of ~2**31 elements).
  rows = jnp.array([0, 1, 2**31 - 1, 33_554_431, 2**30], jnp.int32)[:, None]
  cols = jnp.arange(64, dtype=jnp.int32)[None, :]
  for m in (1, 3, 2**20, 2**31 - 1, 2**31):
    b = hashing.bucket(rows, cols, 1, m)
    assert int(b.min()) >= 0 and int(b.max()) < m
  np.testing.assert_array_equal(hashing.bucket(rows, cols, 1, 1), 0)
  with pytest.raises(ValueError):
    hashing.bucket(rows, cols, 1, 0)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_sign_values_and_balance(seed):
  i, j = _grid()
  g = np.asarray(hashing.element_sign(i, j, seed))
  assert set(np.unique(g)) == {-1.0, 1.0}
  # Mean of 64,000 fair signs has sd 0.004.
  assert abs(g.mean()) < 0.02


@pytest.mark.parametrize("m", [16, 100])
def test_sign_is_independent_of_bucket(m):
  i, j = _grid()
  b = np.asarray(hashing.bucket(i, j, 4, m)).ravel()
  g = np.asarray(hashing.element_sign(i, j, 4)).ravel()
  counts = np.bincount(b, minlength=m)
  pos = np.bincount(b, weights=(g > 0), minlength=m)
  # 2 x m contingency table: chi-square of sign-within-bucket against 1/2.
  chi2 = float(np.sum((2 * pos - counts) ** 2 / counts))
  assert chi2 < (m - 1) + 6 * np.sqrt(2 * (m - 1)), chi2


def test_sign_is_not_a_bit_of_the_hash():
  # A sign taken from the bucket hash would correlate perfectly with one of
  # its bits; an independent one correlates with none.
  i, j = _grid()
  h = np.asarray(hashing.element_hash(i, j, 2)).ravel()
  g = np.asarray(hashing.element_sign(i, j, 2)).ravel()
  for bit in range(32):
    s = 1.0 - 2.0 * ((h >> bit) & 1)
    assert abs(float(np.mean(s * g))) < 0.03, bit
