"""Locality-sensitive hash families as pure `init`/`hash` function pairs.

Each family is an `LSHFamily(init, hash)` in the style of optax's
transforms: `init(rng, dim, num_tables, hashes_per_table) -> params` and
`hash(params, x) -> codes`, where `x` is `(..., dim)` and `codes` is
`(..., num_tables)` int32 bucket ids in `[0, 2^range_pow)`.

* DWTA (densified winner-take-all, BOLT's default): each hash is the argmax
  position within a bin of `bin_size` input dimensions drawn from random
  permutations; `K` hashes of `log2(bin_size)` bits make one bucket id.
  `dwta_hash_sparse` hashes sparse inputs and densifies empty bins by
  borrowing the hash of another bin chosen by a fixed probe sequence.
* SRP (SimHash): the sign of `K` random +-1 projections per table.
"""
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numba
import numpy as np

_DENSIFY_ROUNDS = 16


class LSHFamily(NamedTuple):
  init: Callable
  hash: Callable


class DWTAParams(NamedTuple):
  """Bins of input dimensions for DWTA.

  Attributes:
    bins: `(L, K, bin_size)` int32 input dimensions of each bin.
    probes: `(_DENSIFY_ROUNDS, L*K)` int32 bins to borrow from when empty.
  """
  bins: jax.Array
  probes: jax.Array


class SRPParams(NamedTuple):
  """Random +-1 projections: `(dim, L*K)`."""
  projections: jax.Array


def dwta_init(rng, dim: int, num_tables: int, hashes_per_table: int,
              bin_size: int = 8) -> DWTAParams:
  """Draws DWTA bins from concatenated random permutations of `dim`.

  Args:
    rng: a `jax.random` key.
    dim: input dimension.
    num_tables: L.
    hashes_per_table: K.
    bin_size: dimensions per bin (BOLT: 8); capped at `dim`.

  Returns:
    `DWTAParams`.
  """
  bin_size = max(min(bin_size, dim), 2) if dim >= 2 else 1
  n_bins = num_tables * hashes_per_table
  n_perm = -(-n_bins * bin_size // dim)
  k1, k2 = jax.random.split(rng)
  perms = jax.vmap(lambda k: jax.random.permutation(k, dim))(
      jax.random.split(k1, n_perm)).reshape(-1)[:n_bins * bin_size]
  bins = perms.reshape(num_tables, hashes_per_table, bin_size)
  probes = jax.random.randint(k2, (_DENSIFY_ROUNDS, n_bins), 0, n_bins)
  return DWTAParams(bins.astype(jnp.int32), probes.astype(jnp.int32))


def _combine(pos: jax.Array, bits: int) -> jax.Array:
  """(..., L, K) small ints -> (..., L) bucket ids."""
  k = pos.shape[-1]
  shifts = bits * jnp.arange(k, dtype=jnp.int32)
  return jnp.sum(pos.astype(jnp.int32) << shifts, axis=-1).astype(jnp.int32)


def dwta_hash(params: DWTAParams, x: jax.Array) -> jax.Array:
  """DWTA codes of dense vectors `x` `(..., dim)` -> `(..., L)`."""
  _, _, b = params.bins.shape
  vals = jnp.take(x, params.bins, axis=-1)   # (..., L, K, b)
  pos = jnp.argmax(vals, axis=-1)
  return _combine(pos, max(int(math.ceil(math.log2(b))), 1))


def dwta_hash_sparse(params: DWTAParams, ids: jax.Array, vals: jax.Array,
                     dim: int) -> jax.Array:
  """DWTA codes of sparse vectors, with densification of empty bins.

  Args:
    params: `DWTAParams`.
    ids: `(B, P)` int32 nonzero dimensions; padding entries have `vals == 0`
      and any id (they are ignored).
    vals: `(B, P)` values.
    dim: input dimension.

  Returns:
    `(B, L)` int32 codes.
  """
  n_tables, k, b = params.bins.shape
  n_bins = n_tables * k
  # Where each dimension sits in each permutation copy: flat bin, position.
  flat = params.bins.reshape(-1)
  slot = jnp.arange(flat.shape[0], dtype=jnp.int32)
  n_perm = -(-flat.shape[0] // dim)
  copy = slot // dim if dim > 0 else slot
  where = jnp.full((n_perm, dim), -1, jnp.int32).at[copy, flat].set(slot)
  batch = ids.shape[0]
  valid = vals != 0
  # (B, P, n_perm) slots of each nonzero; -1 where the copy is truncated.
  s = where[:, ids].transpose(1, 2, 0)
  ok = valid[..., None] & (s >= 0)
  v = jnp.broadcast_to(vals[..., None], s.shape)
  seg = jnp.where(ok, jnp.arange(batch)[:, None, None] * n_bins + s // b,
                  batch * n_bins)
  best = jax.ops.segment_max(jnp.where(ok, v, -jnp.inf).reshape(-1),
                             seg.reshape(-1), batch * n_bins + 1)
  is_best = ok & (v == best[seg])
  pos = jax.ops.segment_min(jnp.where(is_best, s % b, b).reshape(-1),
                            seg.reshape(-1), batch * n_bins + 1)
  pos = pos[:-1].reshape(batch, n_bins)
  empty = pos >= b
  # Densification: an empty bin borrows the hash of a probed non-empty bin.
  for r in range(params.probes.shape[0]):
    other = pos[:, params.probes[r]]
    take = empty & (other < b)
    pos = jnp.where(take, other, pos)
    empty = pos >= b
  pos = jnp.where(empty, 0, pos)
  return _combine(pos.reshape(batch, n_tables, k),
                  max(int(math.ceil(math.log2(b))), 1))


def srp_init(rng, dim: int, num_tables: int, hashes_per_table: int
             ) -> SRPParams:
  """Random +-1 projections, `K` per table."""
  signs = jax.random.rademacher(rng, (dim, num_tables, hashes_per_table),
                                dtype=jnp.float32)
  return SRPParams(signs)


def srp_hash(params: SRPParams, x: jax.Array) -> jax.Array:
  """SimHash codes: K sign bits per table, `(..., dim)` -> `(..., L)`."""
  proj = jnp.einsum("...d,dlk->...lk", x, params.projections)
  return _combine(proj > 0, 1)


DWTA = LSHFamily(dwta_init, dwta_hash)
SRP = LSHFamily(srp_init, srp_hash)
FAMILIES = {"dwta": DWTA, "srp": SRP}


def bits_per_hash(params) -> int:
  """Bits contributed by one of the K hashes."""
  if isinstance(params, DWTAParams):
    return max(int(math.ceil(math.log2(params.bins.shape[-1]))), 1)
  return 1


def num_buckets(params) -> int:
  """Number of distinct bucket ids `hash` can return."""
  if isinstance(params, DWTAParams):
    return 2 ** (bits_per_hash(params) * params.bins.shape[1])
  return 2 ** params.projections.shape[2]


def hash_rows(family: LSHFamily, params, w, chunk: int = 8192) -> np.ndarray:
  """Codes of every row of `w` `(N, dim)`, in chunks to bound memory.

  Returns:
    `(N, L)` int32 numpy array.
  """
  if isinstance(params, DWTAParams):
    return dwta_hash_host(params, w)
  w = jnp.asarray(w)
  n = w.shape[0]
  if n <= chunk:
    return np.asarray(_hash_jit(family.hash, params, w))
  pad = (-n) % chunk
  wp = jnp.pad(w, ((0, pad), (0, 0))).reshape(-1, chunk, w.shape[1])
  return np.asarray(_hash_chunks(family.hash, params, wp))[:n]


_hash_jit = jax.jit(lambda fn, p, x: fn(p, x), static_argnums=0)


def _hash_chunks(fn, params, wp):
  return _hash_chunks_jit(fn, params, wp)


_hash_chunks_jit = jax.jit(
    lambda fn, p, wp: jax.lax.map(lambda c: fn(p, c), wp).reshape(
        -1, _n_tables(p)), static_argnums=0)


def _n_tables(params) -> int:
  if isinstance(params, DWTAParams):
    return params.bins.shape[0]
  return params.projections.shape[1]


_BLOCK = 256


@numba.njit(parallel=True, cache=True)
def _dwta_rows(wt, bins, bits):
  # `wt` is `(dim, N)`: one bin compares 8 contiguous rows of a block of
  # neurons, which vectorises; a row-at-a-time loop was 10x slower.
  n = wt.shape[1]
  n_tables, k, b = bins.shape
  out = np.zeros((n_tables, n), np.int32)
  n_blocks = -(-n // _BLOCK)
  for blk in numba.prange(n_blocks):
    lo = blk * _BLOCK
    hi = min(n, lo + _BLOCK)
    best = np.empty(hi - lo, np.float32)
    pos = np.empty(hi - lo, np.int32)
    for l in range(n_tables):
      for h in range(k):
        d0 = bins[l, h, 0]
        for i in range(hi - lo):
          best[i] = wt[d0, lo + i]
          pos[i] = 0
        for p in range(1, b):
          d = bins[l, h, p]
          for i in range(hi - lo):
            v = wt[d, lo + i]
            cur = best[i]
            # Branch-free, so that LLVM vectorises the loop.
            pos[i] = p if v > cur else pos[i]
            best[i] = v if v > cur else cur
        shift = bits * h
        for i in range(hi - lo):
          out[l, lo + i] |= pos[i] << shift
  return out


def dwta_hash_host(params: DWTAParams, w) -> np.ndarray:
  """`dwta_hash` of the rows of `w` `(N, dim)` on the host, `(N, L)` int32.

  The same codes as `dwta_hash` (ties go to the first position); used for
  table rebuilds, where XLA's gather took 22 s for 670k rows and this loop
  about 10x less (see BENCHMARKS.md).
  """
  wt = np.ascontiguousarray(np.asarray(w, np.float32).T)
  bins = np.asarray(params.bins)
  return _dwta_rows(wt, bins, bits_per_hash(params)).T


def _probe_flips(margin, alt, own, bits, probes):
  """Codes one hash away from `own`, the smallest-margin hashes first.

  Args:
    margin: `(..., L, K)` how far each hash is from changing.
    alt: `(..., L, K)` the value each hash would change to.
    own: `(..., L, K)` the hashes themselves.
    bits: bits per hash.
    probes: neighbours per table (at most K).

  Returns:
    `(..., L, 1 + probes)` int32 codes, the own code first.
  """
  k = own.shape[-1]
  probes = min(probes, k)
  base = _combine(own, bits)
  if probes == 0:
    return base[..., None]
  order = jax.lax.top_k(-margin, probes)[1]                 # (..., L, P)
  shifts = bits * order
  old = jnp.take_along_axis(own, order, -1).astype(jnp.int32)
  new = jnp.take_along_axis(alt, order, -1).astype(jnp.int32)
  flipped = base[..., None] + ((new - old) << shifts)
  return jnp.concatenate([base[..., None], flipped], -1)


def probe_codes(params, x: jax.Array, probes: int) -> jax.Array:
  """Multi-probe: each table's own bucket and `probes` neighbouring ones.

  DWTA: a neighbour replaces one of the `K` winners by its bin's runner-up,
  for the hashes whose winner leads by the least. SRP: a neighbour flips
  the sign bit of the projection closest to zero.

  Returns:
    `(..., L, 1 + min(probes, K))` int32 codes; `[..., 0]` is `hash(x)`.
  """
  if isinstance(params, DWTAParams):
    vals = jnp.take(x, params.bins, axis=-1)                # (..., L, K, b)
    own = jnp.argmax(vals, axis=-1)
    first = jnp.max(vals, axis=-1)
    b = vals.shape[-1]
    rest = jnp.where(jnp.arange(b) == own[..., None], -jnp.inf, vals)
    alt = jnp.argmax(rest, axis=-1)
    margin = first - jnp.max(rest, axis=-1)
    return _probe_flips(margin, alt, own, bits_per_hash(params), probes)
  proj = jnp.einsum("...d,dlk->...lk", x, params.projections)
  own = (proj > 0).astype(jnp.int32)
  return _probe_flips(jnp.abs(proj), 1 - own, own, 1, probes)
