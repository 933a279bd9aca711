"""launch.sparse: bad input of every kind ends with exit code 2 and one `error:` line.

The sparse launcher's counterpart of tests/test_bad_input.py (same driver:
one process imports the libraries, a forked child runs each command line).
"""
import os

import pytest

from test_bad_input import run_cases


def _csv(tmp, rows=60):
  words = {"sport": "goal match team win", "tech": "chip code phone data"}
  lines = ["title,topic"] + [f"{words['sport' if i % 2 else 'tech']} doc{i},"
                             f"{'sport' if i % 2 else 'tech'}" for i in range(rows)]
  path = tmp / "d.csv"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


# name -> (extra arguments given the tmp dir, text the error line must contain)
CASES = {
    "sparsity_above_one": (lambda t: ["--config.model.sparsity=1.5"], "model.sparsity"),
    "negative_sparsity": (lambda t: ["--config.model.sparsity=-0.5"], "model.sparsity"),
    "nan_sparsity": (lambda t: ["--config.model.sparsity=nan"], "model.sparsity"),
    "hidden_not_a_number": (lambda t: ["--config.model.hidden=abc"], "model.hidden"),
    "hidden_zero": (lambda t: ["--config.model.hidden=64,0"], "model.hidden"),
    "hidden_empty": (lambda t: ["--config.model.hidden=,"], "model.hidden"),
    "zero_epochs": (lambda t: ["--config.epochs=0"], "epochs"),
    "negative_epochs": (lambda t: ["--config.epochs=-2"], "epochs"),
    "zero_batch_size": (lambda t: ["--config.batch_size=0"], "batch_size"),
    "negative_learning_rate": (lambda t: ["--config.model.learning_rate=-0.1"],
                               "model.learning_rate"),
    "unknown_activation": (lambda t: ["--config.model.activation=swish2"], "model.activation"),
    "unknown_active_set": (lambda t: ["--config.model.active_set=all"], "model.active_set"),
    "unknown_hash": (lambda t: ["--config.model.hash=md5"], "model.hash"),
    "negative_num_tables": (lambda t: ["--config.model.num_tables=-4"], "model.num_tables"),
    "zero_input_dim": (lambda t: ["--config.data.input_dim=0"], "data.input_dim"),
    "zero_ngrams": (lambda t: ["--config.data.ngrams=0"], "data.ngrams"),
    "holdout_one": (lambda t: ["--config.data.holdout=1.0"], "data.holdout"),
    "lsh_target_recall_above_one": (lambda t: ["--config.eval.lsh_target_recall=2"],
                                    "lsh_target_recall"),
    "unknown_task": (lambda t: ["--config.task=regression"], "regression"),
    "unknown_data_name": (lambda t: ["--config.data.name=reuters"], "reuters"),
    "missing_file": (lambda t: [f"--config.data.path={t / 'nope.csv'}"], "nope.csv"),
    "unknown_text_column": (lambda t: ["--config.data.text_column=body"], "body"),
    "unknown_key": (lambda t: ["--config.model.no_such_key=1"], "no_such_key"),
    "non_numeric_epochs": (lambda t: ["--config.epochs=many"], "epochs"),
    "missing_config_file": (lambda t: ["--config=configs/nope.py"], "nope.py"),
    "stray_argument": (lambda t: ["extra"], "extra"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sparse_bad")
  good = _csv(tmp)
  cases, workdirs = [], {}
  for name, (extra, _) in sorted(CASES.items()):
    case_dir = tmp / name
    case_dir.mkdir()
    workdirs[name] = str(case_dir / "w")
    argv = ["--config=configs/text.py", f"--workdir={workdirs[name]}",
            f"--config.data.path={good}", "--config.data.text_column=title",
            "--config.data.label_column=topic", "--config.model.hidden=8",
            "--config.data.input_dim=512", "--config.batch_size=16", "--config.epochs=1"]
    cases.append((name, argv + extra(case_dir), str(case_dir / "out")))
  return run_cases(tmp, cases, workdirs, "launch.sparse")


@pytest.mark.parametrize("case", sorted(CASES))
def test_sparse_bad_input_exits_2_with_one_error_line_naming_the_culprit(outcomes, case):
  code, stdout, stderr, workdir = outcomes[case]
  assert code == 2, (code, stdout, stderr)
  errors = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, stderr
  assert CASES[case][1] in errors[0], errors[0]
  assert "Traceback" not in stderr, stderr
  assert "| epoch |" not in stdout
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl"))
