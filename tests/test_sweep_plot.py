"""The sweep (grid -> table -> plots) and launch.plot, on a tiny dataset."""
import csv
import os

import pytest

from conftest import SMALL_FLAGS
from conftest import run_launch
from conftest import small_config
from fairjax import plotting
from fairjax import sweep
from fairjax.errors import InputError


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
  from conftest import write_interactions  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("sweep")
  path = write_interactions(str(root / "ratings.csv"))
  config = small_config(path, rounds=2)
  dists = {"two": "1:0.5,4:0.5", "deep": "1:0.5,16:0.5"}
  workdir = str(root / "out")
  cells = sweep.run_grid(config, workdir, ["fair", "heterofl", "popularity"], dists, [0, 1],
                         log=lambda s: None)
  return config, path, dists, workdir, cells


def test_grid_runs_every_cell_once_and_resumes(grid):
  config, _, dists, workdir, cells = grid
  assert len(cells) == 2 * 2 * 3
  assert os.path.isdir(os.path.join(workdir, "deep", "heterofl", "seed1"))
  # popularity ignores the devices' memory: one run per seed, shared.
  assert len({c.workdir for c in cells if c.algorithm == "popularity"}) == 2
  logged = []
  again = sweep.run_grid(config, workdir, ["fair"], dists, [0], log=logged.append)
  assert not logged  # finished cells are reused, nothing reruns
  assert again[0].final == [c for c in cells if c.algorithm == "fair"][0].final


def test_summary_table_csv_and_plots(grid):
  config, _, dists, workdir, cells = grid
  rows = sweep.summarise(cells, config.eval.protocol)
  assert [(r["distribution"], r["algorithm"]) for r in rows][:3] == [
      ("two", "heterofl"), ("two", "fair"), ("two", "popularity")]
  deep = {r["algorithm"]: r for r in rows if r["distribution"] == "deep"}
  assert deep["heterofl"]["excluded_clients"] > 0  # d = 8 < 16
  assert deep["fair"]["excluded_clients"] == 0
  assert deep["fair"]["seeds"] == 2 and deep["fair"]["hr@10_std"] is not None
  assert "level/16x/ndcg@10" in deep["fair"]
  out = sweep.write_results(rows, cells, workdir, config.eval.protocol, dists)
  text = open(out["markdown"]).read()
  assert "| heterofl |" in text and "`1:0.5,16:0.5`" in text and "margin" in text
  with open(out["csv"]) as f:
    table = list(csv.DictReader(f))
  assert len(table) == len(rows) and "level/4x/hr@10_std" in table[0]
  for p in out["plots"]:
    assert os.path.getsize(p) > 1000 and p.endswith(".png")
  marg = sweep.margins(rows, "ndcg@10")
  assert {m["distribution"] for m in marg} == {"deep"}  # only there did a rival exclude


def test_parse_distributions():
  assert sweep.parse_distributions("wide") == {"wide": "1:0.25,8:0.25,64:0.25,512:0.25"}
  assert sweep.parse_distributions("a=1:0.5,2:0.5;b=1:1") == {"a": "1:0.5,2:0.5", "b": "1:1"}
  with pytest.raises(InputError):
    sweep.parse_distributions("huge")
  with pytest.raises(InputError):
    sweep.parse_distributions("a=1:0.5,2:0.6")


def test_plot_curves_per_level(grid, tmp_path):
  _, _, _, workdir, cells = grid
  fair = [c for c in cells if c.algorithm == "fair" and c.distribution == "two"][0]
  runs = plotting.load_runs([fair.workdir], ["fair"])
  assert plotting.level_names(runs["fair"]) == ["1x", "4x"]
  fig = plotting.plot_curves(runs, "hr@10")
  shown = [ax.get_title() for ax in fig.axes if ax.get_visible()]
  assert shown == ["overall", "1x", "4x"]
  assert plotting.save(fig, str(tmp_path / "c.png"))


def _federated(levels, empty=(), rounds=(2, 4), base=0.3):
  """Records of a run whose capacity mix has `levels`; those in `empty` had no clients."""
  out = []
  for r in rounds:
    rec = {"round": r, "hr@10": base + 0.01 * r}
    for lv in levels:
      rec[f"level/{lv}/hr@10"] = None if lv in empty else base + 0.02 * r
    out.append(rec)
  out[-1]["final"] = True
  return out


def _drawn(fig):
  """Panel title -> labels of the lines it draws."""
  return {ax.get_title(): sorted(l.get_label().replace(" (reference)", "")
                                 for l in ax.get_lines())
          for ax in fig.axes if ax.get_visible() and ax.get_title()}


def test_plot_draws_a_run_only_in_the_panels_of_levels_it_has():
  runs = {"mixed": _federated({"1x", "8x", "64x"}),
          "no64": _federated({"1x", "8x"}, base=0.2),
          "only1": _federated({"1x"}, base=0.1),
          "empty8": _federated({"1x", "8x"}, empty={"8x"}, base=0.15),
          "pop": [{"round": 0, "hr@10": 0.25, "final": True}]}
  fig = plotting.plot_curves(runs, "hr@10")
  ref = "pop"
  assert _drawn(fig) == {"overall": sorted(["mixed", "no64", "only1", "empty8", ref]),
                         "1x": sorted(["mixed", "no64", "only1", "empty8", ref]),
                         "8x": sorted(["mixed", "no64", ref]),
                         "64x": sorted(["mixed", ref])}
  # A reference is a flat dashed line at its overall value; runs are solid curves.
  for ax in fig.axes:
    for line in ax.get_lines():
      if line.get_label().startswith(ref):
        assert line.get_linestyle() == "--" and set(line.get_ydata()) == {0.25}
      else:
        assert line.get_linestyle() == "-"
  plotting.plt.close(fig)


def test_plot_panels_fill_a_grid_not_one_row():
  runs = {"a": _federated({"1x", "8x", "64x"})}
  runs["a"][0]["level/512x/hr@10"] = 0.1  # five panels
  fig = plotting.plot_curves(runs, "hr@10")
  width, height = fig.get_size_inches()
  assert width / height < 2.5  # one row of five panels was about 8.6
  shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
  assert len(shown) == 5 and len({ax.get_position().y0 for ax in shown}) == 2
  plotting.plt.close(fig)
  assert plotting.grid_shape(1) == (1, 1)
  assert plotting.grid_shape(2) == (1, 2)
  assert plotting.grid_shape(4) == (2, 2)
  assert plotting.grid_shape(5) == (2, 3)
  assert plotting.grid_shape(9) == (3, 3)


def test_launch_plot_and_sweep_entry_points(grid, tmp_path):
  _, path, _, workdir, cells = grid
  runs = sorted({c.workdir for c in cells if c.distribution == "two"})
  out = str(tmp_path / "fig" / "curves.png")
  proc = run_launch("launch.plot", [f"--runs={','.join(runs)}", "--metric=ndcg@10",
                                    f"--out={out}"])
  assert proc.returncode == 0, proc.stderr
  assert os.path.getsize(out) > 1000
  bad = run_launch("launch.plot", [f"--runs={runs[0]}", "--metric=nope", f"--out={out}"])
  assert bad.returncode == 2 and bad.stderr.startswith("error:")
  # The sweep entry point tabulates what finished (no training here).
  proc = run_launch("launch.sweep", ["--config=configs/ml100k.py", f"--workdir={workdir}",
                                     "--config.data.name=", f"--config.data.path={path}",
                                     "--algorithms=fair,heterofl,popularity",
                                     "--distributions=two=1:0.5,4:0.5;deep=1:0.5,16:0.5",
                                     "--seeds=0,1", "--summary_only"] + SMALL_FLAGS)
  assert proc.returncode == 0, proc.stderr
  assert "| fair |" in proc.stdout
  bad = run_launch("launch.sweep", ["--config=configs/ml100k.py", f"--workdir={workdir}",
                                    "--distributions=huge"])
  assert bad.returncode == 2 and "huge" in bad.stderr


def test_markdown_of_both_protocols_has_a_table_per_protocol():
  row = {"distribution": "two", "algorithm": "fair", "seeds": 1, "excluded_clients": 0,
         "hr@10": 0.5, "hr@10_std": 0.0, "ndcg@10": 0.3, "ndcg@10_std": 0.0,
         "ndcg@20": 0.04, "ndcg@20_std": 0.0, "recall@20": 0.1, "recall@20_std": 0.0}
  text = sweep.markdown([row], "both")
  assert "sampled protocol" in text and "full protocol" in text
  assert "| fair | 1 | 0 | 0.5000 | 0.3000 |" in text
  assert "| fair | 1 | 0 | 0.0400 | 0.1000 |" in text
