"""Two processes on loopback (jax.distributed) train what one process trains."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import JAX_CACHE
from conftest import REPO
from conftest import SMALL_FLAGS


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=JAX_CACHE,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("XLA_FLAGS", None)  # one CPU device per process: a mesh of two
  env.pop("JAX_COORDINATOR_ADDRESS", None)
  return subprocess.Popen([sys.executable, "-m", "launch.train"] + args, cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=600):
  """Waits for all; kills the rest if one hangs, so the suite never blocks."""
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_two_processes_match_one(tmp_path, small_csv):
  base = ["--config=configs/ml100k.py", "--config.data.name=",
          f"--config.data.path={small_csv}", "--config.clients_per_round=7"] + [
              f for f in SMALL_FLAGS if not f.startswith("--config.clients_per_round")]
  shared = str(tmp_path / "two")  # one workdir for both: a shared filesystem
  port = _free_port()
  dist = [f"--coordinator=127.0.0.1:{port}", "--num_processes=2"]
  procs = [_start(base + [f"--workdir={tmp_path / 'one'}"]),
           _start(base + [f"--workdir={shared}", "--process_id=0"] + dist),
           _start(base + [f"--workdir={shared}", "--process_id=1"] + dist)]
  (rc1, out1, err1), (rc0, out0, err0), (rcb, outb, errb) = _finish(procs)
  assert rc1 == 0, err1[-3000:]
  assert rc0 == 0, err0[-3000:]
  assert rcb == 0, errb[-3000:]
  # Process 0 alone reports: one table, and metrics written once.
  assert "| overall |" in out0 and "| overall |" not in outb
  one, two = _metrics(str(tmp_path / "one")), _metrics(shared)
  assert [r["round"] for r in two] == [r["round"] for r in one] == [2, 4]
  for a, b in zip(one, two):
    for k in a:
      if k.startswith("time/"):
        continue
      if isinstance(a[k], float):
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
      else:
        assert b[k] == a[k], k
  assert os.listdir(os.path.join(shared, "checkpoints"))
