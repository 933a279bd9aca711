"""Ranking metrics for both protocols, per-level reports and metrics.jsonl.

Protocols (docs/design.md, "Evaluation"):
  sampled: each test item ranked among 99 sampled unseen items; HR@10, NDCG@10.
  full:    all items ranked, the user's training items masked; NDCG@20,
           Recall@20.

Ties count against the model (a negative scoring equal to the positive
outranks it), so a constant scorer gets HR = 0 rather than a perfect score.
"""
import json
import math
import os
import sys
from typing import Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

SAMPLED_K = 10
FULL_K = 20
PROTOCOLS = ("sampled", "full", "both")


def metric_names(protocol):
  """The metrics a protocol reports ("both": the sampled ones, then the full ones)."""
  if protocol == "sampled":
    return (f"hr@{SAMPLED_K}", f"ndcg@{SAMPLED_K}")
  if protocol == "full":
    return (f"ndcg@{FULL_K}", f"recall@{FULL_K}")
  return metric_names("sampled") + metric_names("full")


@jax.jit
def sampled_ranks(scores):
  """Rank of column 0 among each row's scores (0 = best); ties count against."""
  return (scores[:, 1:] >= scores[:, :1]).sum(-1)


def hit_and_ndcg(ranks, k=SAMPLED_K):
  """Per-example HR@k and NDCG@k from 0-based ranks (numpy)."""
  ranks = np.asarray(ranks)
  hit = (ranks < k).astype(np.float64)
  ndcg = hit / np.log2(ranks + 2.0)
  return hit, ndcg


@jax.jit
def _merge_topk(best_scores, best_items, scores, train_mask, first):
  """The running top-k after one chunk of items (`first` .. first + C - 1).

  The chunk's masked scores are appended after the best so far, whose items
  all have lower ids; `lax.top_k` puts the lower position first among equal
  scores, so the result is what one `top_k` over all items gives.
  """
  scores = jnp.where(train_mask, -jnp.inf, scores)
  items = first + jnp.arange(scores.shape[1], dtype=jnp.int32)
  both = jnp.concatenate([best_scores, scores], axis=1)
  top, at = jax.lax.top_k(both, best_scores.shape[1])
  ids = jnp.concatenate([best_items, jnp.broadcast_to(items, scores.shape)], axis=1)
  return top, jnp.take_along_axis(ids, at, axis=1)


# Scores computed at once in the full protocol's chunks (users x items): the
# memory a chunk takes is a small multiple of this many floats per layer width.
PAIRS_PER_CHUNK = 1 << 20


def full_topk(score_fn: Callable, users, num_items, train_indptr, train_items, k=FULL_K,
              item_chunk=None):
  """Each user's k best items over the whole catalogue, training items masked.

  Items are scored in chunks of `item_chunk` (default: PAIRS_PER_CHUNK /
  len(users)) and merged into a running top-k, so memory stays bounded by
  the chunk whatever the catalogue; the result is the same as one top-k over
  every item (ties go to the lower item id either way).

  Args:
    score_fn: `(users [B], items [B, C]) -> [B, C]`; if it has a `grid`
      attribute, `grid(users [B], items [C]) -> [B, C]` (every user against
      the same items) is called instead.
    users: [B] user ids.
    num_items: catalogue size.
    train_indptr, train_items: CSR of each user's training items.
    k: how many items.
    item_chunk: items per chunk.

  Returns:
    int32 [B, k] item ids, best first.
  """
  users = np.asarray(users)
  b = len(users)
  if item_chunk is None:
    item_chunk = max(FULL_K, PAIRS_PER_CHUNK // max(b, 1))
  chunk = int(min(item_chunk, num_items))
  grid = getattr(score_fn, "grid", None)
  # Every user's training items, as (row, item) pairs sorted by item.
  counts = train_indptr[users + 1] - train_indptr[users]
  rows = np.repeat(np.arange(b), counts)
  own = (np.concatenate([train_items[train_indptr[u]:train_indptr[u + 1]] for u in users])
         if b else np.zeros((0,), np.int64))
  order = np.argsort(own, kind="stable")
  rows, own = rows[order], own[order]
  bounds = np.searchsorted(own, np.arange(0, num_items + chunk, chunk))
  # -1: no item (a user with fewer than k unmasked items keeps some).
  best = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.full((b, k), -1, jnp.int32))
  for c, first in enumerate(range(0, num_items, chunk)):
    # The last chunk is padded to the same width (one compiled shape); its
    # padding scores -inf and is never picked ahead of a real item.
    items = np.arange(first, first + chunk, dtype=np.int32)
    pad = items >= num_items
    items = np.where(pad, 0, items)
    if grid is not None:
      scores = grid(users, items)
    else:
      scores = score_fn(users, np.broadcast_to(items, (b, chunk)))
    mask = np.zeros((b, chunk), bool)
    mask[:, pad] = True
    sel = slice(bounds[c], bounds[c + 1])
    mask[rows[sel], own[sel] - first] = True
    best = _merge_topk(*best, jnp.asarray(scores, jnp.float32), mask, jnp.int32(first))
  return np.asarray(best[1])


def full_per_user(top_items, test_sets):
  """Per-user NDCG@20 and Recall@20 (numpy).

  Args:
    top_items: [B, 20] item ids, best first.
    test_sets: list of B arrays of the users' test items (non-empty).

  Returns:
    (ndcg [B], recall [B]).
  """
  discounts = 1.0 / np.log2(np.arange(2, FULL_K + 2))
  ndcg = np.zeros(len(test_sets))
  recall = np.zeros(len(test_sets))
  for b, test in enumerate(test_sets):
    hits = np.isin(top_items[b], test)
    dcg = (hits * discounts).sum()
    idcg = discounts[:min(len(test), FULL_K)].sum()
    ndcg[b] = dcg / idcg
    recall[b] = hits.sum() / len(test)
  return ndcg, recall


def evaluate_sampled(score_fn: Callable, users, candidates, batch_size=4096):
  """Sampled protocol for each test interaction.

  Args:
    score_fn: (users [B], items [B, C]) -> scores [B, C].
    users: [T] user of each test interaction.
    candidates: [T, 1 + negatives], column 0 the test item.
    batch_size: rows per call (padded to keep one compiled shape).

  Returns:
    dict with per-interaction arrays "hr@10" and "ndcg@10" ([T]).
  """
  users = np.asarray(users)
  candidates = np.asarray(candidates)
  ranks = []
  for start in range(0, len(users), batch_size):
    u = users[start:start + batch_size]
    c = candidates[start:start + batch_size]
    n = len(u)
    if n < batch_size and len(users) > batch_size:
      u = np.pad(u, (0, batch_size - n))
      c = np.pad(c, ((0, batch_size - n), (0, 0)))
    ranks.append(np.asarray(sampled_ranks(score_fn(u, c)))[:n])
  ranks = np.concatenate(ranks) if ranks else np.zeros((0,), np.int32)
  hit, ndcg = hit_and_ndcg(ranks)
  return {f"hr@{SAMPLED_K}": hit, f"ndcg@{SAMPLED_K}": ndcg}


def evaluate_full(score_fn: Callable, num_items, test_users, test_items,
                  train_indptr, train_items, batch_size=256, item_chunk=None):
  """Full protocol: every item ranked, the user's training items masked.

  Users are taken `batch_size` at a time and items in chunks (`full_topk`),
  so memory stays bounded whatever the catalogue's size.

  Args:
    score_fn: (users [B], items [B, C]) -> scores [B, C], optionally with a
      `grid` attribute (see `full_topk`).
    num_items: number of items.
    test_users, test_items: test interactions.
    train_indptr, train_items: CSR of each user's training items.
    batch_size: users per chunk.
    item_chunk: items per chunk (default: see `full_topk`).

  Returns:
    (users [U'], dict "ndcg@20"/"recall@20" -> [U']) for users with tests.
  """
  test_users = np.asarray(test_users)
  order = np.argsort(test_users, kind="stable")
  tu, ti = test_users[order], np.asarray(test_items)[order]
  users, starts = np.unique(tu, return_index=True)
  ends = np.append(starts[1:], len(tu))
  ndcgs, recalls = [], []
  for s in range(0, len(users), batch_size):
    ub = users[s:s + batch_size]
    n = len(ub)
    # Padded to one compiled shape (padding repeats a real user).
    padded = np.pad(ub, (0, batch_size - n), mode="edge") if len(users) > batch_size else ub
    top = full_topk(score_fn, padded, num_items, train_indptr, train_items,
                    item_chunk=item_chunk)[:n]
    tests = [ti[starts[s + r]:ends[s + r]] for r in range(n)]
    nd, rc = full_per_user(top, tests)
    ndcgs.append(nd)
    recalls.append(rc)
  cat = lambda xs: np.concatenate(xs) if xs else np.zeros((0,))
  return users, {f"ndcg@{FULL_K}": cat(ndcgs), f"recall@{FULL_K}": cat(recalls)}


def summarise(per_example: Mapping[str, np.ndarray], groups=None,
              group_names=None) -> Dict[str, float]:
  """Means overall and per group ("level/<name>/<metric>")."""
  out = {k: float(np.mean(v)) if len(v) else float("nan") for k, v in per_example.items()}
  if groups is not None:
    groups = np.asarray(groups)
    for g, name in enumerate(group_names):
      sel = groups == g
      for k, v in per_example.items():
        out[f"level/{name}/{k}"] = float(np.mean(v[sel])) if sel.any() else float("nan")
  return out


def level_name(c):
  """'8x', '1x', '2.5x': the key a capacity level has in metrics.jsonl."""
  c = float(c)
  return f"{int(c)}x" if c == int(c) else f"{c:g}x"


def _clean(v):
  if isinstance(v, (np.floating, np.integer)):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return None
  return v


class MetricsWriter:
  """Appends one JSON object per evaluation to DIR/metrics.jsonl."""

  def __init__(self, workdir, resume_round: Optional[int] = None, finished=False):
    """Opens the file: fresh, or truncated to what a checkpoint covers.

    Args:
      workdir: the run's directory.
      resume_round: None for a fresh run; else the checkpoint's round, and
        lines of later rounds (written after that checkpoint) are dropped.
      finished: the checkpoint is the run's last round, so its final line
        stays final. Otherwise the run goes on (a finished run extended with
        more rounds): the old final line is an evaluation of the state the
        run resumes from, so it is kept, without its `final` mark.
    """
    self.path = os.path.join(workdir, "metrics.jsonl")
    if resume_round is None and os.path.exists(self.path):
      os.remove(self.path)
    elif resume_round is not None and os.path.exists(self.path):
      keep = []
      with open(self.path) as f:
        for line in f:
          if not line.strip():
            continue
          try:
            rec = json.loads(line)
          except json.JSONDecodeError:  # a line cut short by a crash
            continue
          if rec.get("round", 0) > resume_round:
            continue
          if rec.get("final") and not finished:
            rec.pop("final")
            line = json.dumps(rec, sort_keys=True)
          keep.append(line if line.endswith("\n") else line + "\n")
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)

  def write(self, record: Mapping):
    rec = {k: _clean(v) for k, v in record.items()}
    with open(self.path, "a") as f:
      f.write(json.dumps(rec, sort_keys=True) + "\n")
      f.flush()
      os.fsync(f.fileno())


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def show_progress(bar, what, record, names):
  """Puts an evaluation's metrics on the progress bar, or on a line of its own.

  A terminal shows a tqdm bar; without one (a log file, nohup) the bar is
  off, so each evaluation prints one line to stderr, and a long run shows
  how it goes.

  Args:
    bar: what the progress callable returned (a tqdm bar, or any iterable).
    what: where the run is, e.g. "round 25/200".
    record: the evaluation's metrics record.
    names: the metric keys to show.
  """
  shown = {k: record[k] for k in names if isinstance(record.get(k), (int, float))}
  if hasattr(bar, "set_postfix") and not getattr(bar, "disable", False):
    bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
    return
  print(f"{what}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()),
        file=sys.stderr, flush=True)


def say(text):
  """Prints a line on stderr without breaking a progress bar drawn there."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  tqdm.write(text, file=sys.stderr)
  sys.stderr.flush()
