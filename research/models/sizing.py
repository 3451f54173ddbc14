"""Width and input-size arithmetic shared by the model families."""


def divided(width, divisor):
  """`width` ÷ `divisor`, never below one unit (a zero-width layer has no output to feed on)."""
  if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
    raise ValueError(f'width_divisor must be a positive integer, not {divisor!r}')
  return max(1, width // divisor)


def check_fits(model, input_shape):
  """Raises ValueError when `input_shape` (no batch) is too small for `model.stack`.

  Too small an input is otherwise caught late and inconsistently: depending on the CPU kernel a
  pool of a 1×1 map either aborts inside oneDNN or silently yields a 0×0 map, and the dense
  layers then train on nothing. Only static shapes are chained: no weights are created.
  """
  shape = (None, *input_shape)
  for layer in model.stack:
    try:
      out = tuple(layer.compute_output_shape(shape))
    except ValueError:  # Keras' "output size would be zero or negative" of a `valid` conv or pool
      out = None
    if out is None or any(d is not None and d < 1 for d in out[1:]):
      raise ValueError(f'input {tuple(input_shape)} is too small for {model.name}: {layer.name} '
                       f'cannot shrink {shape[1:]} any further; use a larger input_size')
    shape = out
