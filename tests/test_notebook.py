"""notebooks/quickstart.ipynb runs top to bottom (so it cannot rot).

The default run executes it on its small synthetic variant
(FAIRJAX_NOTEBOOK_SMALL=1: the same cells, tiny data and shapes); the slow
run on MovieLens-100K, as a reader runs it.
"""
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import JAX_CACHE
from conftest import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "quickstart.ipynb")


def _execute(monkeypatch, small):
  # The kernel inherits this environment: CPU only, and the suite's compile cache.
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", JAX_CACHE)
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  if small:
    monkeypatch.setenv("FAIRJAX_NOTEBOOK_SMALL", "1")
  else:
    monkeypatch.delenv("FAIRJAX_NOTEBOOK_SMALL", raising=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=1200, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  figures = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(figures) == 2, "the collapse/expand picture and the per-level plot"
  return "".join(o.get("text", "") for o in outputs)


def _check(text):
  # The laws hold, the round by hand equals sim.round, both runs report levels.
  for law in ("collapse(expand(w)) == w: True", "P(P(T)) == P(T): True",
              "fold(collapse_2(T)) == collapse_4(T): True"):
    assert law in text, text
  diff = float(re.search(r"largest difference from sim.round: (\S+)", text).group(1))
  assert diff < 1e-5
  assert re.search(r"^ fair: HR@10 \d\.\d{4}", text, re.M)
  assert re.search(r"^ drop: HR@10 \d\.\d{4}", text, re.M)
  assert re.search(r"\('\d+x', False\)\] \d+ clients", text)  # the new algorithm ran


def test_tutorial_notebook_executes_on_small_data(monkeypatch):
  _check(_execute(monkeypatch, small=True))


# Slow (MovieLens-100K, a few minutes): `make test-all` runs it.
@pytest.mark.slow
def test_tutorial_notebook_executes_on_movielens_100k(monkeypatch):
  text = _execute(monkeypatch, small=False)
  _check(text)
  assert "943 users, 1682 items" in text
