"""Every notebook in notebooks/ executes top to bottom without an error, and its asserts on the numbers it
prints hold (small settings inside); the four longest (30 s to a minute each on 2 cores) run with
`-m slow`. In the default run every notebook's names are checked instead: each `from M import a` and each
`m.attr` of an imported module resolves, so a renamed or removed library function breaks the suite, not
just the notebook."""

import ast
import importlib
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SLOW = ("nash_learning.ipynb", "offline_pessimism.ipynb", "online_exploration.ipynb", "rejection_sampling.ipynb")


def code_of(path):
  notebook = nbformat.read(path, as_version=4)
  return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def unresolved_names(source):
  """Names the code imports or reads from an imported project module that do not exist."""
  tree = ast.parse(source)
  modules, missing = {}, []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        modules[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name if alias.asname
                                                                                     else alias.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
      module = importlib.import_module(node.module)
      for alias in node.names:
        try:  # a name of the module, or one of its submodules
          value = getattr(module, alias.name) if hasattr(module, alias.name) else importlib.import_module(
              f"{node.module}.{alias.name}")
        except ImportError:
          missing.append(f"{node.module}.{alias.name}")
          continue
        modules[alias.asname or alias.name] = value
  project = ("gshf_jax", "bandit_sim", "llm")
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
      owner = modules[node.value.id]
      if getattr(owner, "__name__", "").startswith(project) and not hasattr(owner, node.attr):
        missing.append(f"{owner.__name__}.{node.attr}")
  return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_names_exist(path):
  assert unresolved_names(code_of(path)) == []


def test_the_name_check_finds_a_missing_function():
  assert unresolved_names("import gshf_jax as g\nfrom bandit_sim import online\ng.no_such(1)\nonline.gone()") == [
      "gshf_jax.no_such", "bandit_sim.online.gone"]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in NOTEBOOKS],
                         ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  errors = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.get("output_type") == "error"]
  assert not errors
