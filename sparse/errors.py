"""The exception that means "the user's input is wrong" (for `sparse/`).

`sparse/` never imports `fairjax/`, so it has its own `InputError`. Entry
points catch it, print one `error: ...` line on stderr and exit with code 2.
"""


class InputError(ValueError):
  """Bad user input: a missing file, an unknown column, an invalid value."""
