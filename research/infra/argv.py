"""Flags in a raw argv list, before or without absl's parsing: read one, or drop one.

Entry points use these to choose a config file before the flags are defined, and to pass a
command line on (to local workers, a cluster job) with a flag removed or replaced.
"""


def strip_flag(argv, name):
  """argv without flag `name` in any of absl's spellings (--name=v, --name v, --noname)."""
  out, skip = [], False
  for arg in argv:
    if skip:
      skip = False
      continue
    bare = arg.lstrip('-') if arg.startswith('-') else None
    if bare == name:
      skip = True  # its value is the next argument
    elif bare is None or not (bare.startswith(name + '=') or bare == 'no' + name):
      out.append(arg)
  return out


def flag_value(argv, name):
  """The value of --name in argv (either --name=v or --name v), or None."""
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      return arg.split('=', 1)[1]
    if arg == f'--{name}' and i + 1 < len(argv):
      return argv[i + 1]
  return None
