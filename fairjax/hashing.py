"""Element hash and sign of a hashed table, computed on the fly.

Every element `(i, j)` of a compressible table has a 32-bit hash `h(i, j)`
and a sign `g(i, j)` in {-1, +1}, both pure functions of `(i, j, seed)`.
Nothing of size rows * cols is ever stored: a client keeps `m` floats and a
seed, and hashes only the elements it touches.

The mixing function is MurmurHash3's 32-bit body (one block per coordinate)
followed by its avalanche finalizer, in `uint32` arithmetic that wraps like
C's. Row and column enter as separate blocks rather than as a flat index
`i * cols + j`, so tables with rows * cols up to and beyond 2**31 never
overflow `int32`.

The sign uses the same mixing under an independently derived seed instead of
a bit of the bucket hash: for a size `m` that is not a power of two,
`h mod m` depends on every bit of `h`, so any bit of `h` would correlate with
the bucket.

All functions broadcast `rows`, `cols` and `seed` against each other, accept
Python ints or integer arrays (traced ones included), and are jit-friendly.
"""

import jax.numpy as jnp
import numpy as np

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)
_N = np.uint32(0xE6546B64)
_F1 = np.uint32(0x85EBCA6B)
_F2 = np.uint32(0xC2B2AE35)
# XORed into the seed to derive the sign's seed; any constant that is not 0
# works, since the finalizer below is a bijection that decorrelates the two.
_SIGN_SALT = np.uint32(0x9E3779B9)


def _u32(x):
  """`x` as uint32 with two's-complement wrap (Python ints of any size too)."""
  if isinstance(x, (int, np.integer)):
    # Python ints may exceed int32; reduce them before JAX sees them.
    x = np.uint32(int(x) & 0xFFFFFFFF)
  return jnp.asarray(x).astype(jnp.uint32)


def _rotl(x, r):
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix(h):
  """MurmurHash3's finalizer: a bijection on uint32 with full avalanche."""
  h = h ^ (h >> np.uint32(16))
  h = h * _F1
  h = h ^ (h >> np.uint32(13))
  h = h * _F2
  return h ^ (h >> np.uint32(16))


def _block(h, k):
  """Mixes one 32-bit block `k` into the running state `h` (Murmur3 body)."""
  k = _rotl(k * _C1, 15) * _C2
  h = _rotl(h ^ k, 13)
  return h * np.uint32(5) + _N


def _murmur(rows, cols, seed):
  h = _block(_block(seed, rows), cols)
  # The length word of Murmur3 (two 4-byte blocks); kept for fidelity to the
  # reference so values can be checked against any Murmur3 implementation.
  return _fmix(h ^ np.uint32(8))


def element_hash(rows, cols, seed):
  """The 32-bit hash `h(i, j)` of table elements.

  Args:
    rows: integer array (or int) of row indices `i`.
    cols: integer array (or int) of column indices `j`, broadcastable with
      `rows`.
    seed: the table's seed, an int or integer array broadcastable with them.

  Returns:
    `uint32` array of the broadcast shape.
  """
  return _murmur(_u32(rows), _u32(cols), _u32(seed))


def element_sign(rows, cols, seed):
  """The sign `g(i, j)` in {-1, +1} of table elements, independent of the hash.

  Args:
    rows: integer array (or int) of row indices.
    cols: integer array (or int) of column indices, broadcastable with `rows`.
    seed: the table's seed (the same one given to `element_hash`).

  Returns:
    `float32` array of -1.0 and +1.0, of the broadcast shape.
  """
  sign_seed = _fmix(_u32(seed) ^ _SIGN_SALT)
  h = _murmur(_u32(rows), _u32(cols), sign_seed)
  # The top bit of an avalanche output is as good as any; +1 when it is 0.
  return 1.0 - 2.0 * (h >> np.uint32(31)).astype(jnp.float32)


def bucket(rows, cols, seed, m):
  """The bucket `h(i, j) mod m` of table elements in a size-`m` array.

  Args:
    rows: integer array (or int) of row indices.
    cols: integer array (or int) of column indices, broadcastable with `rows`.
    seed: the table's seed.
    m: the number of buckets, a Python int in [1, 2**31].

  Returns:
    `int32` array of buckets in [0, m), of the broadcast shape.
  """
  m = int(m)
  if not 1 <= m <= 2**31:
    raise ValueError(f"bucket count m={m} is outside [1, 2**31]")
  return (element_hash(rows, cols, seed) % np.uint32(m)).astype(jnp.int32)
