"""The one atomic file writer of the project: a temporary file in the target folder, flushed to disk,
then renamed over the target, so a reader (or a rerun after a crash) sees the old file or the new one,
never a partial one. Standard library only; both halves (bandit_sim, llm) write through it.
"""

import io
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def unwritable(path: str, *, folder: bool = False) -> str | None:
  """Why `path` (a file to write, or with folder=True a folder to write into) cannot be written, or None:
  it exists as the other kind, or its nearest existing folder is not a folder or is read-only. For checks
  before expensive work; the write itself still reports what happens later (a full disk)."""
  if os.path.exists(path) and os.path.isdir(path) != folder:
    return f"{path} is {'not ' if folder else ''}a folder"
  existing = os.path.abspath(path if folder else os.path.dirname(os.path.abspath(path)))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    return f"{existing} is not a folder"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"{existing} is not writable"
  return None


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically, creating the folder if needed. The file gets the permissions of
  an ordinary new file under the user's umask (0644 under umask 022), not the temporary file's 0600."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """UTF-8 text, atomically."""
  write_bytes(path, text.encode())


def write_json(path: str, obj: Any, *, indent: int | None = 2, sort_keys: bool = True) -> None:
  """JSON with a trailing newline, atomically."""
  write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str, rows: Iterable[Any]) -> None:
  """One JSON object per line, atomically."""
  write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def save_figure(fig: Any, path: str, *, dpi: int = 120) -> None:
  """A matplotlib figure as PNG, atomically (the figure is rendered in memory first)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
  write_bytes(path, buffer.getvalue())


def write_folder(path: str, fill: Callable[[str], None]) -> None:
  """Creates the folder `path` atomically: fill(tmp) writes into a temporary folder beside it, which is
  then renamed over `path` (an existing folder at `path` is replaced only once the new one is complete).
  The folder gets an ordinary new folder's permissions under the user's umask (0755 under umask 022)."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-")
  try:
    os.chmod(tmp, 0o777 & ~_umask())
    fill(tmp)
    if os.path.exists(path):
      old = tempfile.mkdtemp(dir=parent, prefix=".old-")
      os.replace(path, os.path.join(old, "x"))
      os.replace(tmp, path)
      shutil.rmtree(old)
    else:
      os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
