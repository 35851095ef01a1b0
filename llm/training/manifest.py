"""Run manifests: what made a stage's output, recorded beside it, so that a rerun reuses the output only when
it would be made the same way again.

A manifest is {"settings": the resolved settings that determine the result, "inputs": a fingerprint per
input (data files, model folders, tokenizer, in-memory prompt lists), "version": the project's version}.
A trainer's output_dir records it in manifest.json (before training starts; summary.json, written last,
marks the run finished); a file stage FILE (samples, labelled pairs, evaluations) in FILE.manifest.json.
The version is recorded, not compared.

A rerun meets an existing stage in one of three ways, chosen by the config key `on_change` (the CLI's
--overwrite and --resume):
  stop       the default: a stage with the same manifest is reused (or resumed, if unfinished); any
             difference stops the run with one line naming the stage and the differing keys.
  overwrite  a stage with another manifest is deleted and made again (stages that match are still reused).
  resume     an unfinished trainer run with another manifest continues from its last checkpoint under the
             new settings; its manifest keeps the old one under "previous".
"""

import hashlib
import importlib.metadata
import json
import os
import shutil

from gshf_jax import atomic
from llm.parallel import distributed

ON_CHANGE = ("stop", "overwrite", "resume")
WHOLE_FILE_BYTES = 64 << 20  # files up to this size are hashed whole; larger ones by SAMPLES chunks
SAMPLES, CHUNK = 16, 1 << 20
TEMPORARY = (".tmp-", ".old-")  # prefixes of gshf_jax.atomic's temporary files and folders


def version():
  try:
    return importlib.metadata.version("gshf-jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def file_fingerprint(path):
  """sha256 of the file's bytes; a file over WHOLE_FILE_BYTES (model weights) is identified by its size
  and SAMPLES evenly spaced 1 MiB chunks (first and last included), which any retraining changes."""
  h = hashlib.sha256()
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    if size <= WHOLE_FILE_BYTES:
      for block in iter(lambda: f.read(CHUNK), b""):
        h.update(block)
    else:
      h.update(str(size).encode())
      for i in range(SAMPLES):
        f.seek((size - CHUNK) * i // (SAMPLES - 1))
        h.update(f.read(CHUNK))
  return h.hexdigest()


def path_fingerprint(path):
  """The fingerprint of a file, or of a folder (every file under it by relative path, temporary files
  left out); "" for no path and "missing" for a path that does not exist."""
  if not path:
    return ""
  if os.path.isfile(path):
    return file_fingerprint(path)
  if not os.path.isdir(path):
    return "missing"
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs[:] = sorted(d for d in dirs if not d.startswith(TEMPORARY))
    for name in sorted(f for f in files if not f.startswith(TEMPORARY)):
      file = os.path.join(root, name)
      h.update(f"{os.path.relpath(file, path)}:{file_fingerprint(file)}\n".encode())
  return h.hexdigest()


def value_fingerprint(value):
  """sha256 of a JSON-serializable value (e.g. a list of prompts)."""
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def make(settings, *, paths=None, values=None):
  """The manifest of a stage: its settings ({name: JSON value}), the fingerprints of its input `paths`
  ({name: file or folder}) and `values` ({name: JSON value}), and the project version."""
  inputs = {name: path_fingerprint(p) for name, p in (paths or {}).items()}
  inputs.update({name: value_fingerprint(v) for name, v in (values or {}).items()})
  return {"settings": settings, "inputs": inputs, "version": version()}


def differences(old, new):
  """Lines naming what differs between two manifests: changed settings with both values, changed inputs."""
  lines = []
  for part, describe in (("settings", lambda k, a, b: f"{k}: {a!r} -> {b!r}"),
                         ("inputs", lambda k, a, b: f"{k}: {'contents changed' if a and b else 'given' if b else 'not given'}")):
    a, b = old.get(part, {}), new.get(part, {})
    lines += [describe(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  return lines


def read(record):
  """The manifest stored at `record`, or None (missing or unreadable)."""
  try:
    with open(record) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def sweep(folder):
  """Removes the temporary files and folders a killed run left in `folder` (gshf_jax.atomic's)."""
  if not os.path.isdir(folder):
    return
  for name in os.listdir(folder):
    if name.startswith(TEMPORARY):
      path = os.path.join(folder, name)
      shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)


def claim(record, manifest, *, name, done, started=False, on_change="stop", clear=None, resumable=False):
  """Decides what to do with the stage whose manifest is stored at `record`. Returns True when its output
  is done and was made with `manifest` (reuse it). Otherwise returns False (make it, or resume it) after
  recording `manifest` (by the main process), unless the difference stops the run.

  Args:
    record: the manifest file (OUT/manifest.json or FILE.manifest.json).
    manifest: from `make`.
    name: the stage's output, as errors name it.
    done: whether the output is complete; started: whether some of it exists (an unfinished run).
    on_change: "stop", "overwrite" or "resume" (module docstring).
    clear: deletes the stage's outputs before it is made again (for overwrite).
    resumable: whether an unfinished stage can continue under other settings (trainer runs).

  Raises:
    ValueError: the output exists and was made with other settings or inputs (or by a version that kept no
      manifest), and on_change does not allow going on.
  """
  main = distributed.is_main_process()  # the one process that writes
  old = read(record)
  if not (done or started):  # nothing of it exists yet
    changes = []
  elif old is None:
    changes = ["no manifest records how it was made"]
  else:
    changes = differences(old, manifest)
  resume = on_change == "resume" and resumable and not done and old is not None
  if changes and not (on_change == "overwrite" or resume):
    hint = "rerun with --overwrite (on_change=overwrite) to make it again"
    if resumable and not done:
      hint += ", or with --resume (on_change=resume) to continue it with the new settings"
    raise ValueError(f"{name} was made with other settings or inputs ({'; '.join(changes)}); {hint}")
  if main:
    sweep(os.path.dirname(os.path.abspath(record)))
  if not changes:
    if done:
      return True
    if main:
      atomic.write_json(record, manifest)
    return False
  if main:
    if resume:
      atomic.write_json(record, {**manifest, "previous": old})
    else:
      if clear:
        clear()
      atomic.write_json(record, manifest)
  return False

def claim_file(path, settings, *, on_change, paths=None, values=None):
  """`claim` for a stage whose output is the single file `path` (its manifest in PATH.manifest.json):
  True when the file exists and was made with these settings and inputs (reuse it), else False (make it)."""
  return claim(path + ".manifest.json", make(settings, paths=paths, values=values), name=path,
               done=os.path.exists(path), on_change=on_change)
