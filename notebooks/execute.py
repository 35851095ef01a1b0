"""Executes every notebook in this folder in place, so that they are committed with their outputs and
figures and read on a code host without running them: `python notebooks/execute.py [NAME.ipynb ...]`.
The test suite re-executes each one (tests/test_notebooks.py) without writing."""

import pathlib
import sys

import nbformat
from nbclient import NotebookClient

from gshf_jax.workarounds import apply_cpu_workarounds


def main(names):
  apply_cpu_workarounds()  # the kernels inherit the environment
  folder = pathlib.Path(__file__).resolve().parent
  paths = [folder / n for n in names] if names else sorted(folder.glob("*.ipynb"))
  for path in paths:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    nbformat.write(notebook, path)
    print(f"executed {path.name}")


if __name__ == "__main__":
  main(sys.argv[1:])
