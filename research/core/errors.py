"""The error type for bad input: entry points print its message as one line and exit non-zero."""


class UserError(Exception):
  """Something the user can fix; the message names the problem and the fix."""
