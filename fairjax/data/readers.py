"""Readers for interaction files: (user, item[, rating[, timestamp]]) rows.

Every reader returns a `RawInteractions`: original ids as strings, in file
order, with nothing filtered, deduplicated or re-indexed (that is the job of
`fairjax.data.splits`). A malformed file raises `InputError` naming the file
and the first offending line; no line is ever dropped silently. Blank lines
carry no data and are skipped.

Formats:
  movielens  `ratings.dat`: `user::item::rating::timestamp`.
  inter      RecBole atomic file: a header of tab-separated `name:type` fields
             naming `user_id`, `item_id` and optionally `rating`, `timestamp`
             (any order, other columns ignored); rows split on tabs only, so
             ids may contain spaces and commas (ML-1M's items are titles).
  csv, tsv   `user,item[,rating[,timestamp]]` split on commas / tabs (a `tsv`
             file with no tab in its first lines is split on runs of
             whitespace). The header is optional: the first line is one when
             it holds two known column names (`userId`, `movieId`,
             `user_id`, `item`, `rating`, ...), or a non-numeric rating or
             timestamp next to non-numeric ids. A header naming the user and
             item columns selects columns by name; otherwise they go by
             position and columns past the fourth are ignored. A CSV with
             double quotes is parsed with the `csv` module.
             Ratings and timestamps must be numbers (timestamps in any
             numeric unit, e.g. seconds since the epoch).
  adjacency  LightGCN/NGCF `train.txt`/`test.txt`: `user item item ...`,
             whitespace-separated non-negative integers; a line holding only
             a user gives that user no interactions.
  auto       by extension, then content (see `detect_format`).

Files ending in `.gz` are decompressed transparently. Text is decoded as
UTF-8, falling back to Latin-1 (MovieLens' own files use it).
"""

import csv
import gzip
import itertools
import os
from typing import NamedTuple, Optional, Sequence

import numpy as np

from fairjax.errors import InputError

FORMATS = ("auto", "movielens", "inter", "csv", "tsv", "adjacency")

# Header names (lower-cased, with `_`, `-` and spaces removed) that identify
# a column; the first is how RecBole spells it.
_USER_NAMES = ("userid", "user", "uid", "users", "customerid", "reviewerid")
_ITEM_NAMES = ("itemid", "item", "iid", "items", "movieid", "movie", "mid",
               "productid", "asin", "bookid", "isbn", "trackid", "songid")
_RATING_NAMES = ("rating", "ratings", "score", "stars", "value",
                 "bookrating")
_TIME_NAMES = ("timestamp", "time", "ts", "unixtime", "unixreviewtime",
               "datetime", "date")
# How many lines format detection looks at.
_SNIFF_LINES = 1000
_HEADER_NAMES = frozenset(_USER_NAMES + _ITEM_NAMES + _RATING_NAMES +
                          _TIME_NAMES)


class RawInteractions(NamedTuple):
  """Interactions as read from a file, one entry per data line.

  Attributes:
    users: object array of original user ids (str), in file order.
    items: object array of original item ids (str), aligned with `users`.
    ratings: float32 ratings, or None when the file has none.
    timestamps: float64 timestamps, or None when the file has none.
  """
  users: np.ndarray
  items: np.ndarray
  ratings: Optional[np.ndarray]
  timestamps: Optional[np.ndarray]


class _Lines(NamedTuple):
  """The non-blank lines of a file and their 1-based line numbers."""
  path: str
  text: list
  numbers: np.ndarray


def read_interactions(path: str, fmt: str = "auto") -> RawInteractions:
  """Reads an interaction file.

  Args:
    path: the file to read (`.gz` allowed).
    fmt: one of `FORMATS`; "auto" picks by extension and content.

  Returns:
    The file's interactions, in file order.

  Raises:
    InputError: the file is missing, empty or malformed, or `fmt` is unknown.
  """
  if fmt not in FORMATS:
    raise InputError(f"{path}: unknown format {fmt!r}; known formats: "
                     f"{', '.join(FORMATS)}")
  lines = _read_lines(path)
  if fmt == "auto":
    fmt = detect_format(path, lines.text)
  if fmt == "movielens":
    return _read_delimited(lines, "::", "movielens (user::item::rating::"
                           "timestamp)", header="never")
  if fmt == "inter":
    return _read_inter(lines)
  if fmt == "csv":
    return _read_delimited(lines, ",", "csv (user,item[,rating[,timestamp]])")
  if fmt == "tsv":
    head = lines.text[:_SNIFF_LINES]
    sep = "\t" if any("\t" in line for line in head) else None
    return _read_delimited(lines, sep,
                           "tsv (user item [rating [timestamp]])")
  return _read_adjacency(lines)


def detect_format(path: str, text: Sequence[str]) -> str:
  """Guesses the format of a file from its name and its first lines.

  `.inter` is RecBole, `.csv` CSV, `.tsv` TSV, `.dat` with `::` MovieLens.
  Otherwise the first lines decide: `::` → movielens, a tab-separated
  `name:type` header → inter, non-negative integers with a varying number
  per line, or more than four on every line → adjacency, tabs → tsv, commas → csv, anything else → tsv split
  on whitespace (so an adjacency file in which every user has exactly one
  item reads as the same `user item` pairs either way).

  Args:
    path: the file name (only its extension is used).
    text: the file's non-blank lines.

  Returns:
    A format name other than "auto".
  """
  name = path[:-3] if path.endswith(".gz") else path
  ext = os.path.splitext(name)[1].lower()
  if ext == ".inter":
    return "inter"
  if ext == ".csv":
    return "csv"
  if ext == ".tsv":
    return "tsv"
  head = text[:_SNIFF_LINES]
  first = head[0]
  if "::" in first:
    return "movielens"
  if "\t" in first and all(":" in f for f in first.split("\t")):
    return "inter"
  token_rows = [line.split() for line in head]
  # Integer rows are adjacency lists when their lengths vary, or when they
  # are longer than a `user item rating timestamp` table's rows (a set whose
  # users all hold the same number of items, e.g. after a fixed-size split).
  widths = {len(tokens) for tokens in token_rows}
  if ((len(widths) > 1 or max(widths) > 4) and
      all(_is_uint(t) for tokens in token_rows for t in tokens)):
    return "adjacency"
  if "\t" in first:
    return "tsv"
  if "," in first:
    return "csv"
  return "tsv"


def sniff_format(path: str) -> str:
  """Detects the format of `path` from its name and first lines.

  Useful to read a train/test pair with the format of the train file: a
  `test.txt` with one item per user would otherwise look like a table.

  Args:
    path: the file (`.gz` allowed).

  Returns:
    A format name other than "auto".

  Raises:
    InputError: the file is missing or empty.
  """
  _check_file(path)
  opener = gzip.open if path.endswith(".gz") else open
  head = []
  try:
    with opener(path, "rb") as f:
      for raw in f:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.strip():
          head.append(line.lstrip("\ufeff"))
        if len(head) == _SNIFF_LINES:
          break
  except (OSError, EOFError) as e:
    raise InputError(f"{path}: cannot read: {e}") from e
  if not head:
    raise InputError(f"{path}: file is empty")
  return detect_format(path, head)


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file")
  if os.path.isdir(path):
    raise InputError(f"{path}: is a directory, not an interaction file")


def _read_lines(path: str) -> _Lines:
  """Returns the non-blank lines of `path`, or raises if there are none."""
  _check_file(path)
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        data = f.read()
    else:
      with open(path, "rb") as f:
        data = f.read()
  except (OSError, EOFError) as e:
    raise InputError(f"{path}: cannot read: {e}") from e
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError:
    text = data.decode("latin-1")
  if text.startswith("\ufeff"):  # A byte-order mark is not part of the data.
    text = text[1:]
  # Split on '\n' only: str.splitlines() also splits on characters such as
  # '\x1c' and '\u2028' that may legitimately sit inside an id.
  all_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
  keep = [i for i, line in enumerate(all_lines) if line.strip()]
  if not keep:
    raise InputError(f"{path}: file is empty")
  if len(keep) == len(all_lines):
    kept = all_lines
  else:
    kept = [all_lines[i] for i in keep]
  return _Lines(path, kept, np.asarray(keep, dtype=np.int64) + 1)


def _split_rows(lines: _Lines, sep: Optional[str], quoted: bool = False,
                min_fields: int = 2, description: str = "") -> np.ndarray:
  """Splits every line into the same number of fields.

  Args:
    lines: the lines to split.
    sep: the separator; None splits on runs of whitespace.
    quoted: parse with the `csv` module (double-quoted fields).
    min_fields: fewer fields than this on the first line is an error.
    description: the expected layout, for error messages.

  Returns:
    An object array [num_lines, num_fields] of str.
  """
  text = lines.text
  if sep is not None and not quoted:
    # Fast path: count separators per line, then split the whole file once.
    counts = np.fromiter(map(str.count, text, itertools.repeat(sep)),
                         np.int64, len(text)) + 1
  else:
    if quoted:
      reader = csv.reader(text, delimiter=sep, strict=True)
      try:
        rows = list(reader)
      except csv.Error as e:
        line = lines.numbers[max(min(reader.line_num, len(text)), 1) - 1]
        raise InputError(f"{lines.path} line {line}: malformed CSV: {e}"
                         ) from None
    else:
      rows = [line.split() for line in text]
    counts = np.fromiter(map(len, rows), np.int64, len(rows))
  width = int(counts[0])
  if width < min_fields:
    raise InputError(
        f"{lines.path} line {lines.numbers[0]}: too few columns: found "
        f"{width}, expected {description}")
  bad = np.flatnonzero(counts != width)
  if bad.size:
    i = int(bad[0])
    raise InputError(
        f"{lines.path} line {lines.numbers[i]}: {counts[i]} columns, but "
        f"line {lines.numbers[0]} has {width} (expected {description})")
  if sep is not None and not quoted:
    fields = sep.join(text).split(sep)
  else:
    fields = list(itertools.chain.from_iterable(rows))
  return np.array(fields, dtype=object).reshape(len(text), width)


def _normalise_name(field: str) -> str:
  """Lower-cases a header field and drops a RecBole `:type` suffix."""
  name = field.strip().strip('"').split(":")[0].lower()
  return name.replace("_", "").replace("-", "").replace(" ", "")


def _is_uint(token: str) -> bool:
  """Whether `token` is a non-negative decimal integer that fits int64."""
  # str.isdigit alone accepts '²'; int() alone accepts '+1', ' 1' and '1_0'.
  return token.isascii() and token.isdigit() and len(token) <= 18


def _is_number(field: str) -> bool:
  try:
    float(field)
    return True
  except ValueError:
    return False


def _find(names: Sequence[str], wanted: Sequence[str], path: str = "",
          line: int = 0) -> Optional[int]:
  """Returns the column whose name is one of `wanted`, else None.

  With `path` given, two such columns make the header ambiguous: InputError.
  """
  found = [column for column, name in enumerate(names) if name in wanted]
  if len(found) > 1 and path:
    raise InputError(
        f"{path} line {line}: header names the {wanted[0]} column twice (columns "
        f"{', '.join(str(c + 1) for c in found)}); rename or drop one")
  return found[0] if found else None


def _read_delimited(lines: _Lines, sep: Optional[str], description: str,
                    header: str = "detect") -> RawInteractions:
  """Reads a delimited user/item[/rating[/timestamp]] file."""
  quoted = sep == "," and any('"' in line for line in lines.text)
  rows = _split_rows(lines, sep, quoted=quoted, description=description)
  first = [f.strip() for f in rows[0]]
  names = [_normalise_name(f) for f in first]
  # Two known column names make a header (one could be a title such as
  # "Time"). A first line with numeric ids is data even when its rating is
  # not a number: reporting the bad rating beats dropping it as a header.
  has_header = header == "detect" and (
      sum(n in _HEADER_NAMES for n in names) >= 2 or
      (any(not _is_number(f) for f in first[2:4]) and
       not all(_is_number(f) for f in first[:2])))
  columns = list(range(min(rows.shape[1], 4)))
  if has_header:
    at = dict(path=lines.path, line=lines.numbers[0])
    user, item = _find(names, _USER_NAMES, **at), _find(names, _ITEM_NAMES, **at)
    if user is not None and item is not None:
      columns = [user, item, _find(names, _RATING_NAMES, **at),
                 _find(names, _TIME_NAMES, **at)]
    rows, numbers = rows[1:], lines.numbers[1:]
    if not len(rows):
      raise InputError(f"{lines.path}: no interactions, only a header line")
  else:
    numbers = lines.numbers
  columns += [None] * (4 - len(columns))
  return _assemble(lines.path, numbers, rows, *columns)


def _read_inter(lines: _Lines) -> RawInteractions:
  """Reads a RecBole atomic `.inter` file (tab-separated, typed header)."""
  rows = _split_rows(
      lines, "\t", min_fields=2,
      description="tab-separated user_id, item_id, ... with a name:type "
      "header")
  names = [f.strip().split(":")[0] for f in rows[0]]
  at = dict(path=lines.path, line=lines.numbers[0])
  user = _find(names, ("user_id",), **at)
  item = _find(names, ("item_id",), **at)
  if user is None or item is None:
    missing = "user_id" if user is None else "item_id"
    raise InputError(
        f"{lines.path} line {lines.numbers[0]}: header has no {missing} "
        f"column (found: {', '.join(names)})")
  if len(rows) == 1:
    raise InputError(f"{lines.path}: no interactions, only a header line")
  return _assemble(lines.path, lines.numbers[1:], rows[1:], user, item,
                   _find(names, ("rating",), **at), _find(names, ("timestamp",), **at))


def _ids(path: str, numbers: np.ndarray, column: np.ndarray,
         what: str) -> np.ndarray:
  """Strips id tokens and rejects empty ones."""
  ids = np.array([f.strip() for f in column], dtype=object)
  empty = np.flatnonzero(ids == "")
  if empty.size:
    raise InputError(f"{path} line {numbers[empty[0]]}: empty {what} id")
  return ids


def _numbers(path: str, numbers: np.ndarray, column: np.ndarray, what: str,
             dtype: type) -> np.ndarray:
  """Parses a column of numbers; NaN and infinities are errors."""
  try:
    values = column.astype(np.float64)
  except ValueError:
    # Slow path, only to name the culprit.
    for line, field in zip(numbers, column):
      if not _is_number(field):
        raise InputError(f"{path} line {line}: {what} {field.strip()!r} is "
                         f"not a number") from None
    raise
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    i = int(bad[0])
    raise InputError(f"{path} line {numbers[i]}: {what} "
                     f"{column[i].strip()!r} is not a finite number")
  return values.astype(dtype)


def _assemble(path: str, numbers: np.ndarray, rows: np.ndarray, user: int,
              item: int, rating: Optional[int],
              timestamp: Optional[int]) -> RawInteractions:
  """Builds `RawInteractions` from split rows and the chosen columns."""
  return RawInteractions(
      users=_ids(path, numbers, rows[:, user], "user"),
      items=_ids(path, numbers, rows[:, item], "item"),
      ratings=None if rating is None else _numbers(
          path, numbers, rows[:, rating], "rating", np.float32),
      timestamps=None if timestamp is None else _numbers(
          path, numbers, rows[:, timestamp], "timestamp", np.float64))


def _read_adjacency(lines: _Lines) -> RawInteractions:
  """Reads `user item item ...` lines of non-negative integers."""
  rows = [line.split() for line in lines.text]
  sizes = np.fromiter(map(len, rows), np.int64, len(rows))
  tokens = list(itertools.chain.from_iterable(rows))
  if not all(map(_is_uint, tokens)):
    token_lines = np.repeat(lines.numbers, sizes)
    for line, token in zip(token_lines, tokens):
      if token.startswith("-") and _is_uint(token[1:]):
        raise InputError(f"{lines.path} line {line}: negative id {token!r}; "
                         "adjacency ids must be non-negative integers")
      if not _is_uint(token):
        raise InputError(f"{lines.path} line {line}: id {token!r} is not a "
                         "non-negative integer (adjacency format: "
                         "user item item ...)")
  values = np.fromiter(map(int, tokens), np.int64, len(tokens))
  if len(tokens) == len(rows):
    raise InputError(f"{lines.path}: no interactions (every line holds only "
                     "a user id)")
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  is_user = np.zeros(len(tokens), dtype=bool)
  is_user[starts] = True
  users = np.repeat(values[starts], sizes - 1)
  items = values[~is_user]
  return RawInteractions(users=users.astype(str).astype(object),
                         items=items.astype(str).astype(object),
                         ratings=None, timestamps=None)
