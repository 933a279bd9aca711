"""notebooks/quickstart.ipynb runs top to bottom (so it cannot rot)."""
import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import JAX_CACHE
from conftest import REPO

NOTEBOOK = os.path.join(REPO, "notebooks", "quickstart.ipynb")


# Slow (a Jupyter kernel and a training run): `make test-all` runs it.
@pytest.mark.slow
def test_quickstart_notebook_executes(monkeypatch):
  # The kernel inherits this environment: CPU only, and the shared compile cache.
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", JAX_CACHE)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  start = time.time()
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
  seconds = time.time() - start
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was drawn"
  text = "".join(o.get("text", "") for o in outputs)
  assert "users" in text and "ndcg@10" in text
  del seconds  # wall time depends on the machine; the notebook prints its own
