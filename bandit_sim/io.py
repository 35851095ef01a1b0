"""Atomic result files: write to a temporary file in the target folder, then rename over the target."""

import json
import os
import tempfile


def write_atomic(path, data: bytes):
  """Write `data` to `path` so that readers see the old file or the new one, never a partial one."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def write_json_atomic(path, obj):
  write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_figure_atomic(fig, path):
  """Save a matplotlib figure as PNG atomically."""
  import io
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
  write_atomic(path, buffer.getvalue())
