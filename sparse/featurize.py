"""Text to sparse feature ids: hashed word n-grams (fastText/BOLT style)."""
import csv
import os
import re
import zlib
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

from sparse.data import SparseInputs
from sparse.errors import InputError

_TOKEN = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> List[str]:
  """Lower-cased word tokens."""
  return _TOKEN.findall(text.lower())


def featurize(texts: Sequence[str], dim: int = 100_000,
              ngrams: int = 2) -> SparseInputs:
  """Hashes each text's word 1..n-grams into `[0, dim)`.

  Args:
    texts: documents.
    dim: number of hash buckets (the input dimension).
    ngrams: longest n-gram.

  Returns:
    `SparseInputs` with one row per text; values are 1/sqrt(#features) so
    long and short documents give inputs of the same scale.
  """
  ids, offsets, vals = [], [0], []
  for text in texts:
    words = tokens(text)
    feats = set()
    for n in range(1, ngrams + 1):
      for i in range(len(words) - n + 1):
        gram = " ".join(words[i:i + n])
        feats.add(zlib.crc32(gram.encode()) % dim)
    row = sorted(feats)
    ids.extend(row)
    vals.extend([1.0 / max(len(row), 1) ** 0.5] * len(row))
    offsets.append(len(ids))
  return SparseInputs(np.asarray(ids, np.int32),
                      np.asarray(offsets, np.int64),
                      np.asarray(vals, np.float32))


class TextTable(NamedTuple):
  texts: List[str]
  labels: List[str]


def read_csv(path: str, text_column: str, label_column: str) -> TextTable:
  """Reads a text column and a label column from a CSV file with a header.

  Raises:
    InputError: missing file, empty file, or unknown column names.
  """
  if not path:
    raise InputError("data.path: give a CSV file")
  if not os.path.isfile(path):
    raise InputError(f"data.path: no such file: {path}")
  csv.field_size_limit(1 << 30)
  with open(path, newline="", encoding="utf-8", errors="replace") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
      raise InputError(f"{path}: the file is empty")
    header = [h.strip() for h in header]
    for name, col in (("data.text_column", text_column),
                      ("data.label_column", label_column)):
      if col not in header:
        raise InputError(f"{name}: no column {col!r} in {path} "
                         f"(columns: {', '.join(header)})")
    ti, li = header.index(text_column), header.index(label_column)
    texts, labels = [], []
    for row in reader:
      if len(row) <= max(ti, li):
        continue
      if row[li].strip() == "":
        continue
      texts.append(row[ti])
      labels.append(row[li].strip())
  if not texts:
    raise InputError(f"{path}: no rows with a label in {label_column!r}")
  return TextTable(texts, labels)


def label_vocab(labels: Sequence[str],
                extra: Optional[Sequence[str]] = None) -> List[str]:
  """Sorted distinct labels (of train and, if given, test)."""
  return sorted(set(labels) | set(extra or ()))
