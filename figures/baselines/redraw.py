"""Redraws figures/baselines/*.png from the sweep tables in RESULTS.md ("Baselines").

The sweep's runs are not kept in the repository; its tables are. This reads
their mean ± std cells back and draws the same bars as `launch.sweep`, with
the data set and the error bars named in the titles:

  .venv/bin/python figures/baselines/redraw.py
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from fairjax import plotting  # pylint: disable=g-import-not-at-top
from fairjax import sweep  # pylint: disable=g-import-not-at-top

DATASET = "MovieLens-1M, 100 rounds x 64 clients"


def tables(text, protocol):
  """rows (dicts as sweep.summarise gives) of every '**dist** ..., <protocol> protocol' table."""
  rows = []
  for m in re.finditer(rf"^\*\*(\w+)\*\* \(`[^`]*`\), {protocol} protocol.*?\n\n(\|.*?)\n\n",
                       text, re.S | re.M):
    dist, block = m.group(1), m.group(2).splitlines()
    head = [h.strip() for h in block[0].strip("|").split("|")]
    for line in block[2:]:
      cells = [c.strip() for c in line.strip("|").split("|")]
      row = {"distribution": dist, "algorithm": cells[0].replace("`", ""),
             "seeds": int(cells[1])}
      for name, cell in zip(head, cells):
        mean = re.match(r"([\d.]+)(?: ± ([\d.]+))?$", cell)
        if mean and " " not in name and name not in ("seeds", "excluded"):
          row[name] = float(mean.group(1))
          row[f"{name}_std"] = float(mean.group(2) or 0.0)
      rows.append(row)
  return rows


def main():
  with open(os.path.join(ROOT, "RESULTS.md")) as f:
    text = f.read().split("## Baselines", 1)[1]
  out = os.path.dirname(os.path.abspath(__file__))
  for protocol, metrics_, prefix in (("sampled", ("hr@10", "ndcg@10"), ""),
                                     ("full", ("ndcg@20", "recall@20"), "full_")):
    rows = tables(text, protocol)
    for m in metrics_:
      fig = plotting.plot_finals(rows, m, title=sweep.final_title(m, protocol, rows, DATASET))
      print(plotting.save(fig, os.path.join(out, f"{prefix}final_{m}.png")))


if __name__ == "__main__":
  main()
