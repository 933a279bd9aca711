"""Evaluates scoring functions under one protocol, overall and per level."""
from typing import Callable, Optional, Sequence, Union

import numpy as np

from fairjax import data as data_lib
from fairjax import metrics
from fairjax.errors import InputError

ScoreFn = Callable  # (users [B], items [B, C]) -> scores [B, C]


class Evaluator:
  """Holds what a protocol needs (candidates or masks), fixed for a run.

  Args:
    dataset: a `fairjax.data.Dataset`.
    protocol: "sampled", "full" or "both".
    num_negatives: negatives per test item for the sampled protocol.
    seed: seeds the sampled candidates (the same for every algorithm).
  """

  def __init__(self, dataset, protocol="sampled", num_negatives=99, seed=0):
    if protocol not in metrics.PROTOCOLS:
      raise InputError(f"eval.protocol: unknown protocol {protocol!r}; choose one of "
                       f"{', '.join(metrics.PROTOCOLS)}")
    if len(dataset.test_users) == 0:
      raise InputError("data: the split left no test interactions (does every user "
                       "have a single interaction?)")
    self.dataset = dataset
    self.protocol = protocol
    self.names = metrics.metric_names(protocol)
    # "both": one evaluator per protocol, their results merged.
    self.parts = ([Evaluator(dataset, p, num_negatives, seed) for p in ("sampled", "full")]
                  if protocol == "both" else None)
    if protocol == "both":
      return
    if protocol == "sampled":
      self.candidates = data_lib.eval_candidates(dataset, num_negatives, seed)
    else:
      self.indptr, self.train_items = data_lib.train_csr(dataset)

  def _per_example(self, score_fn, rows):
    ds = self.dataset
    if self.protocol == "sampled":
      per = metrics.evaluate_sampled(score_fn, ds.test_users[rows], self.candidates[rows])
      return ds.test_users[rows], per
    return metrics.evaluate_full(score_fn, ds.num_items, ds.test_users[rows],
                                 ds.test_items[rows], self.indptr, self.train_items)

  def __call__(self, score_fn: Union[ScoreFn, Sequence[ScoreFn]],
               user_level: Optional[np.ndarray] = None,
               level_names: Optional[Sequence[str]] = None):
    """Metrics overall and, given each user's level, per level.

    Args:
      score_fn: one scoring function for every user, or one per level (then
        each level's users are scored by their level's function).
      user_level: [num_users] level index of each user, or None.
      level_names: names of the levels ("1x", "8x", ...).

    Returns:
      dict of metric name -> float, plus "level/<name>/<metric>".
    """
    if self.parts is not None:
      out = {}
      for part in self.parts:
        out.update(part(score_fn, user_level, level_names))
      return out
    ds = self.dataset
    all_rows = np.arange(len(ds.test_users))
    if callable(score_fn):
      users, per = self._per_example(score_fn, all_rows)
    else:
      test_level = np.asarray(user_level)[ds.test_users]
      parts = [self._per_example(fn, all_rows[test_level == lv])
               for lv, fn in enumerate(score_fn) if (test_level == lv).any()]
      users = np.concatenate([p[0] for p in parts])
      per = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    groups = None if user_level is None else np.asarray(user_level)[users]
    return metrics.summarise(per, groups, level_names)
