"""Argument checks shared by the gshf_jax modules.

Checks run on concrete values only: inside `jax.jit` or `jax.vmap` a traced argument cannot be inspected,
so its value check is skipped (shape checks always run, shapes are static). Concrete arrays are copied
to the host to be checked; jit the caller to avoid that copy on large inputs.
"""

import jax
import numpy as np


def concrete(value):
  """`value` as a NumPy array, or None when it is a tracer (inside jit/vmap)."""
  try:
    return np.asarray(value)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return None


def check_positive(name, value):
  """Raise ValueError unless every entry of `value` is a finite number > 0."""
  v = concrete(value)
  if v is not None and not (np.all(v > 0) and np.all(np.isfinite(v))):
    raise ValueError(f"{name} must be a finite number > 0, got {v.tolist()!r}")


def check_in_range(name, value, low, high):
  """Raise ValueError unless low <= value <= high entrywise."""
  v = concrete(value)
  if v is not None and not np.all((v >= low) & (v <= high)):
    raise ValueError(f"{name} must lie in [{low}, {high}], got {v.tolist()!r}")


def check_positive_int(name, value):
  """Raise ValueError unless `value` is a Python/NumPy integer >= 1 (static, never traced)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_same_last_axis(*named):
  """`named` = (name, array, name, array, ...): shapes broadcast and share the last axis length."""
  names, arrays = named[0::2], named[1::2]
  shapes = [np.shape(a) for a in arrays]
  described = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
  if any(len(s) == 0 for s in shapes) or len({s[-1] for s in shapes}) != 1:
    raise ValueError(f"{', '.join(names)} must share their last (action) axis; got shapes {described}")
  try:
    np.broadcast_shapes(*shapes)
  except ValueError:
    raise ValueError(f"shapes of {', '.join(names)} do not broadcast: {described}") from None


def check_shape(name, array, shape):
  """Raise ValueError unless np.shape(array) == shape (None in `shape` matches any length)."""
  actual = np.shape(array)
  if len(actual) != len(shape) or any(s is not None and s != a for s, a in zip(shape, actual)):
    expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
    raise ValueError(f"{name} must have shape {expected}, got {list(actual)}")


def check_no_nan(name, value):
  """Raise ValueError when a concrete `value` holds NaN (skipped for traced values)."""
  v = concrete(value)
  if v is not None and np.issubdtype(v.dtype, np.inexact) and np.isnan(v).any():
    raise ValueError(f"{name} holds NaN at {np.argwhere(np.isnan(v))[:3].tolist()} (first entries)")


def check_finite(name, value):
  """Raise ValueError when a concrete `value` holds NaN or +-inf (skipped for traced values)."""
  v = concrete(value)
  if v is not None and np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all():
    raise ValueError(f"{name} must be finite; non-finite at {np.argwhere(~np.isfinite(v))[:3].tolist()} "
                     "(first entries)")


def check_index(name, index, size):
  """Raise ValueError unless every entry of a concrete integer `index` lies in [0, size)."""
  v = concrete(index)
  if v is not None and v.size and (v.min() < 0 or v.max() >= size):
    bad = v[(v < 0) | (v >= size)]
    raise ValueError(f"{name} must index [0, {size}); got {bad[:3].tolist()} (first out of range)")


def check_same_rank(*named):
  """`named` = (name, array, ...): the non-scalar arrays have one number of dimensions and broadcast, so a
  [n] against an [n, 1] (which would broadcast to an [n, n] outer product) is refused."""
  names, arrays = named[0::2], named[1::2]
  shapes = {n: np.shape(a) for n, a in zip(names, arrays) if a is not None and np.ndim(a) > 0}
  described = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
  if len({len(s) for s in shapes.values()}) > 1:
    raise ValueError(f"{', '.join(shapes)} must have the same number of dimensions; got {described}")
  try:
    np.broadcast_shapes(*shapes.values())
  except ValueError:
    raise ValueError(f"shapes of {', '.join(shapes)} do not broadcast: {described}") from None
