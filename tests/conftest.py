"""Shared fixtures: small synthetic interaction files and config helpers."""
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The suite's persistent compilation cache lives in the clone (git ignores
# it), so a fresh clone starts cold, as a new user's or CI's does, and a
# second `make test` in the same clone starts warm. FAIRJAX_TEST_CACHE moves it.
JAX_CACHE = os.environ.get("FAIRJAX_TEST_CACHE") or os.path.join(REPO, ".cache", "jax-tests")


def write_interactions(path, num_users=40, num_items=30, per_user=(4, 12), seed=0):
  """Writes a CSV of `user,item,rating,timestamp` with some structure.

  Users prefer items of their own "genre" (item % 3 == user % 3), so models
  can learn something beyond popularity.
  """
  rng = np.random.default_rng(seed)
  lines = ["user,item,rating,timestamp"]
  for u in range(num_users):
    n = rng.integers(*per_user)
    pool = [i for i in range(num_items) if i % 3 == u % 3]
    other = [i for i in range(num_items) if i % 3 != u % 3]
    k = min(n, len(pool))
    items = list(rng.choice(pool, size=k, replace=False))
    items += list(rng.choice(other, size=max(0, n - k) // 3, replace=False))
    for t, i in enumerate(items):
      lines.append(f"u{u},i{i},{rng.integers(1, 6)},{1000 + 10 * t + u}")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


@pytest.fixture
def small_csv(tmp_path):
  return write_interactions(str(tmp_path / "ratings.csv"))


def run_launch(module, args, timeout=600, env=None):
  """Runs `python -m module args` from the repo root; returns CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  full_env.setdefault("JAX_PLATFORMS", "cpu")
  full_env.setdefault("JAX_COMPILATION_CACHE_DIR", JAX_CACHE)
  full_env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  full_env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  return subprocess.run([sys.executable, "-m", module] + list(args), cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=full_env)


def small_config(path, **overrides):
  """A tiny federated/centralized config on a user file, as a ConfigDict."""
  sys.path.insert(0, REPO)
  from configs import common  # pylint: disable=g-import-not-at-top
  c = common.base_config()
  c.data.path = path
  c.embed_dim = 8
  c.mlp_layers = (16, 8)
  c.rounds = 4
  c.clients_per_round = 8
  c.eval.every = 2
  c.eval.num_negatives = 9
  c.client.batch_size = 8
  c.client.max_items = 16
  c.capacities = "1:0.5,4:0.5"
  c.train.epochs = 2
  c.train.batch_size = 64
  c.checkpoint_every = 2
  for k, v in overrides.items():
    node = c
    *head, last = k.split(".")
    for h in head:
      node = node[h]
    node[last] = v
  return c


# FedAvg's server step (SGD, lr 1): laws about averaging need it, since a
# per-coordinate server optimizer (the default FedAdam) would blur them.
SGD1 = {"server.optimizer": "sgd", "server.lr": 1.0}


def make_sim(path, **overrides):
  """A Simulation on the small file `path` (config overrides as in small_config)."""
  from fairjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from fairjax import simulate  # pylint: disable=g-import-not-at-top
  config = small_config(path, **overrides)
  return simulate.Simulation(config, data_lib.load(config.data))


def run_rounds(sim, rounds):
  """The state after `rounds` rounds from the initial state."""
  state = sim.init_state()
  for r in range(1, rounds + 1):
    state, _ = sim.round(state, r)
  return state


SMALL_FLAGS = ["--config.embed_dim=8", "--config.mlp_layers=(16, 8)", "--config.rounds=4",
               "--config.clients_per_round=8", "--config.eval.every=2",
               "--config.eval.num_negatives=9", "--config.client.batch_size=8",
               "--config.client.max_items=16", "--config.capacities=1:0.5,4:0.5",
               "--config.train.epochs=2", "--config.train.batch_size=64",
               "--config.checkpoint_every=2"]


def pytest_configure(config):
  del config
  # Many tests build the same small programs; a persistent cache lets later
  # tests (and later runs) skip their compilation. Every program is stored:
  # most compile in well under a second, and many tests share them.
  # Subprocesses (launch.* entry points, notebook kernels) inherit it too,
  # instead of the user cache the entry points default to.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", JAX_CACHE)
  os.environ.setdefault("FAIRJAX_CACHE_DIR", JAX_CACHE)
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(JAX_CACHE, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _trim():
  """Gives freed pages back to the OS (glibc keeps them otherwise)."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def _resident_mb():
  try:
    with open("/proc/self/status") as f:
      return int(f.read().split("VmRSS:")[1].split()[0]) // 1024
  except (OSError, IndexError, ValueError):
    return 0


# Above this, a test's end drops every compiled program (see below).
_RESIDENT_LIMIT_MB = 1000


@pytest.fixture(autouse=True)
def _free_compiled_programs():
  """Drops the compiled programs once the process holds more than ~1 GB.

  Tests build their own jitted closures, which later tests rarely reuse;
  kept, they pile up to GBs per worker. Clearing after every test would
  bound memory best but recompiles what modules share (about +40% time),
  so it happens only past the limit.
  """
  yield
  if _resident_mb() > _RESIDENT_LIMIT_MB:
    import jax  # pylint: disable=g-import-not-at-top
    jax.clear_caches()
    _trim()


@pytest.fixture(autouse=True, scope="module")
def _collect_after_module():
  yield
  import gc  # pylint: disable=g-import-not-at-top
  gc.collect()
  _trim()
