"""The one exception type that means "the user's input is wrong".

Entry points catch `InputError`, print one `error: ...` line on stderr and
exit with code 2. Library code raises it for anything a user supplied
(files, config values); bugs stay ordinary exceptions with tracebacks.
"""


class InputError(ValueError):
  """Bad user input: a malformed file, an unknown key, an invalid value."""
