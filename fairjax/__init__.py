"""fairjax: federated recommendation on devices of every size (FAIR), in JAX.

`import fairjax` is cheap; each module is imported the first time it is
used (`fairjax.algorithms`, `fairjax.simulate`, ...), since importing JAX
and flax takes seconds. The ones a notebook starts from:

  fairjax.experiment   run(config, workdir): one experiment end to end
  fairjax.simulate     Simulation: one round at a time; context(), build_model()
  fairjax.algorithms   algorithms as values (Context, Level, Algorithm, REGISTRY)
  fairjax.subspace     collapse / expand / fold / repeat and their pytree forms
  fairjax.data         load(config.data) -> Dataset
  fairjax.evaluation   Evaluator: ranking metrics overall and per level
  fairjax.plotting     figures from metrics.jsonl files

See README.md, "Using it from Python", and docs/design.md.
"""
import importlib

MODULES = ("accounting", "algorithms", "benchmarks", "capacity", "centralized", "checkpoint",
           "client", "compilation", "data", "deployment", "engine", "errors", "evaluation",
           "experiment", "flower", "hashing", "metrics", "models", "plotting", "rowopt",
           "sampling", "scoring", "server",
           "sharding", "simulate", "subspace", "sweep", "validation")

__all__ = list(MODULES)


def __getattr__(name):
  if name in MODULES:
    module = importlib.import_module(f"fairjax.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'fairjax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(MODULES))
