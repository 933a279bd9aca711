"""launch.train end to end: tiny runs of every entry path and bad input."""
import json
import os
import re

import pytest

from conftest import SMALL_FLAGS
from conftest import run_launch


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_fair_end_to_end_writes_metrics_and_resumes(tmp_path, small_csv):
  workdir = str(tmp_path / "run")
  args = ["--config=configs/ml100k.py", f"--workdir={workdir}", "--config.data.name=",
          f"--config.data.path={small_csv}"] + SMALL_FLAGS
  proc = run_launch("launch.train", args)
  assert proc.returncode == 0, proc.stderr
  lines = _metrics(workdir)
  assert [l["round"] for l in lines] == [2, 4]
  last = lines[-1]
  assert last["final"] is True
  for key in ("hr@10", "ndcg@10", "level/1x/hr@10", "level/4x/ndcg@10", "bytes_down",
              "bytes_up", "client_param_bytes/1x", "client_table_bytes/4x"):
    assert key in last, key
  assert last["client_table_bytes/4x"] <= last["client_table_bytes/1x"] / 4
  assert "| overall |" in proc.stdout and "| 4x |" in proc.stdout
  # Under the table, one sentence on what the levels mean, pointing at RESULTS.md.
  sentence = proc.stdout.split("| 4x |")[1].splitlines()[1]
  assert sentence.startswith("Levels: ") and "Reading the demo's table" in sentence
  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "RESULTS.md")) as f:
    assert "### Reading the demo's table" in f.read()
  # Without a terminal (here, a pipe) each evaluation is one progress line.
  assert "round 2/4: hr@10" in proc.stderr and "round 4/4: hr@10" in proc.stderr
  # Compilation is announced, and its time reported after the first round
  # and the first evaluation.
  assert "compiling: the first round" in proc.stderr
  assert re.search(r"round 1 done [\d.]+s after the start \(setup included\): "
                   r"[\d.]+s compiling \d+ program", proc.stderr), proc.stderr
  assert re.search(r"evaluation at round 2 took [\d.]+s, [\d.]+s compiling", proc.stderr)
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  # Rerunning the finished run resumes from its last checkpoint: same result.
  again = run_launch("launch.train", args)
  assert again.returncode == 0, again.stderr
  strip = lambda ls: [{k: v for k, v in l.items() if not k.startswith("time/")} for l in ls]
  assert strip(_metrics(workdir)) == strip(lines)


@pytest.mark.parametrize("algorithm", ["centralized", "popularity"])
def test_reference_trainers_end_to_end(tmp_path, small_csv, algorithm):
  workdir = str(tmp_path / algorithm)
  proc = run_launch("launch.train", [
      "--config=configs/ml100k.py", f"--workdir={workdir}", "--config.data.name=",
      f"--config.data.path={small_csv}", f"--config.algorithm={algorithm}"] + SMALL_FLAGS)
  assert proc.returncode == 0, proc.stderr
  last = _metrics(workdir)[-1]
  assert last["final"] is True and 0.0 <= last["hr@10"] <= 1.0
  if algorithm == "centralized":
    assert "epoch 2/2: hr@10" in proc.stderr


def _bad_file(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


BAD_CASES = {
    "missing_file": (lambda t: ["--config.data.path=" + str(t / "nope.csv")], "nope.csv"),
    "empty_file": (lambda t: ["--config.data.path=" + _bad_file(t, "empty.csv", "")],
                   "empty.csv"),
    "too_few_columns": (lambda t: ["--config.data.path=" + _bad_file(
        t, "short.csv", "1,2,5,100\n3\n")], "short.csv"),
    "non_numeric_rating": (lambda t: ["--config.data.path=" + _bad_file(
        t, "rating.csv", "1,2,5,100\n1,3,abc,101\n")], "rating.csv"),
    "unknown_algorithm": (lambda t: ["--config.algorithm=magic"], "algorithm"),
    "unknown_key": (lambda t: ["--config.no_such_key=1"], "no_such_key"),
    "embed_dim_zero": (lambda t: ["--config.embed_dim=0"], "embed_dim"),
    "compression_below_one": (lambda t: ["--config.capacities=0.5:1"], "capacities"),
    "fractions_not_one": (lambda t: ["--config.capacities=1:0.5,8:0.2"], "capacities"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_with_one_error_line(tmp_path, small_csv, case):
  extra, culprit = BAD_CASES[case]
  base = ["--config=configs/ml100k.py", f"--workdir={tmp_path / 'w'}", "--config.data.name=",
          f"--config.data.path={small_csv}"] + SMALL_FLAGS
  proc = run_launch("launch.train", base + extra(tmp_path))
  assert proc.returncode == 2, (proc.stdout, proc.stderr)
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr
  assert culprit in errors[0], errors[0]
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "w" / "metrics.jsonl")
