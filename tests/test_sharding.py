"""Sharding a level's clients over devices: helpers, and 1 vs 4 devices end to end."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import JAX_CACHE
from conftest import REPO
from conftest import run_launch
from conftest import SMALL_FLAGS
from conftest import write_interactions
from fairjax import sharding
from fairjax.errors import InputError


def test_padded_count_rounds_up_to_whole_devices():
  mesh = sharding.make_mesh(0)
  n = mesh.devices.size
  assert [sharding.padded_count(k, mesh) for k in (1, n, n + 1)] == [n, n, 2 * n]


def test_pad_clients_appends_zero_clients():
  tree = {"items": np.arange(6).reshape(3, 2), "weights": np.ones(3, np.float32)}
  out = sharding.pad_clients(tree, 4)
  np.testing.assert_array_equal(out["items"], [[0, 1], [2, 3], [4, 5], [0, 0]])
  np.testing.assert_array_equal(out["weights"], [1, 1, 1, 0])


def test_more_devices_than_visible_is_an_input_error():
  with pytest.raises(InputError, match="num_devices"):
    sharding.make_mesh(len(jax.devices()) + 1)
  with pytest.raises(InputError, match="num_devices"):
    sharding.make_mesh(-1)


def test_one_device_is_the_plain_jitted_program():
  mesh = sharding.make_mesh(1)

  def program(params, x, w):
    return (w @ x) * params, w.sum(), x * 2
  fn = sharding.shard_clients(program, mesh, num_summed=2)
  x, w = jnp.arange(6.0).reshape(3, 2), jnp.array([1.0, 0.5, 0.0])
  for a, b in zip(fn(2.0, x, w), jax.jit(program)(2.0, x, w)):
    np.testing.assert_array_equal(a, b)
  assert sharding.replicate({"a": x}, mesh)["a"] is x


def _env(**extra):
  """The environment of `run_launch`, for a plain `python -c` subprocess."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=JAX_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.update(extra)
  return env


# Runs in a fresh interpreter: XLA reads the forced device count at startup.
_ONE_VS_FOUR = r"""
import json, os, sys
sys.path.insert(0, os.path.join({repo!r}, "tests"))
import jax
from conftest import small_config
from fairjax import experiment, metrics
assert len(jax.devices()) == 4, jax.devices()
out = {{}}
for n in (1, 4):
  # 7 clients over two levels: 4 and 3, so the second level is padded.
  # FedAvg's server: FedAdam's g / sqrt(v) would magnify rounding-level
  # differences (another summation order) in entries whose update is ~0.
  config = small_config({csv!r}, num_devices=n, clients_per_round=7, rounds=2,
                        **{{"client.dropout": 0.2, "server.optimizer": "sgd",
                            "server.lr": 1.0}})
  workdir = os.path.join({tmp!r}, f"dev{{n}}")
  experiment.run(config, workdir, verbose=False)
  out[n] = metrics.read_metrics(workdir)
print("RESULT " + json.dumps(out))
"""


def _assert_same_metrics(a, b):
  assert len(a) == len(b) and a, (a, b)
  for ra, rb in zip(a, b):
    keys = {k for k in ra if not k.startswith("time/")}
    assert keys == {k for k in rb if not k.startswith("time/")}
    for k in keys:
      if isinstance(ra[k], float):
        assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
      else:
        assert ra[k] == rb[k], k


def test_same_metrics_on_one_and_four_devices(tmp_path):
  csv = write_interactions(str(tmp_path / "ratings.csv"))
  script = _ONE_VS_FOUR.format(repo=REPO, csv=csv, tmp=str(tmp_path))
  proc = subprocess.run(
      [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600,
      env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  runs = json.loads(line[len("RESULT "):])
  assert runs["1"][-1]["final"] is True
  _assert_same_metrics(runs["1"], runs["4"])


def test_launch_rejects_more_devices_than_visible(tmp_path, small_csv):
  proc = run_launch("launch.train", [
      "--config=configs/ml100k.py", f"--workdir={tmp_path / 'w'}", "--config.data.name=",
      f"--config.data.path={small_csv}", "--config.num_devices=64"] + SMALL_FLAGS)
  assert proc.returncode == 2, proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "num_devices" in errors[0], proc.stderr
