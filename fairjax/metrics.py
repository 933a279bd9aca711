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
def _full_topk(scores, train_mask):
  scores = jnp.where(train_mask, -jnp.inf, scores)
  return jax.lax.top_k(scores, FULL_K)[1]


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
                  train_indptr, train_items, batch_size=256):
  """Full protocol: every item ranked, the user's training items masked.

  Args:
    score_fn: (users [B], items [B, num_items]) -> scores [B, num_items].
    num_items: number of items.
    test_users, test_items: test interactions.
    train_indptr, train_items: CSR of each user's training items.
    batch_size: users per call.

  Returns:
    (users [U'], dict "ndcg@20"/"recall@20" -> [U']) for users with tests.
  """
  test_users = np.asarray(test_users)
  order = np.argsort(test_users, kind="stable")
  tu, ti = test_users[order], np.asarray(test_items)[order]
  users, starts = np.unique(tu, return_index=True)
  ends = np.append(starts[1:], len(tu))
  all_items = np.arange(num_items, dtype=np.int32)
  ndcgs, recalls = [], []
  for s in range(0, len(users), batch_size):
    ub = users[s:s + batch_size]
    n = len(ub)
    padded = np.pad(ub, (0, batch_size - n)) if len(users) > batch_size else ub
    mask = np.zeros((len(padded), num_items), bool)
    for r, u in enumerate(ub):
      mask[r, train_items[train_indptr[u]:train_indptr[u + 1]]] = True
    items = np.broadcast_to(all_items, (len(padded), num_items))
    top = np.asarray(_full_topk(score_fn(padded, items), mask))[:n]
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
