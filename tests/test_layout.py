"""The dependency rules of docs/architecture.md, checked on every import statement in the tree (lazy
imports inside functions included), and the package's public names."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BANDIT_LIBRARY = ("env", "offline", "online", "rso", "nlhf", "mixture")


def imported_modules(path):
  """Every absolute module name an `import` or `from ... import` in the file names."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def violations(files, forbidden):
  return sorted(f"{path.relative_to(ROOT)} imports {name}" for path in files for name in imported_modules(path)
                if any(name == f or name.startswith(f + ".") for f in forbidden))


def py_files(*parts):
  return sorted((ROOT.joinpath(*parts)).rglob("*.py"))


def test_gshf_jax_imports_no_flax_transformers_or_matplotlib():
  assert not violations(py_files("gshf_jax"), ("flax", "transformers", "matplotlib", "torch", "bandit_sim", "llm"))


def test_bandit_library_imports_nothing_from_the_experiments_or_llm():
  files = [ROOT / "bandit_sim" / f"{name}.py" for name in BANDIT_LIBRARY]
  assert not violations(files, ("bandit_sim.experiments", "bandit_sim.experiment", "llm"))


def test_experiments_notebooks_tests_and_benchmarks_import_no_other_experiment():
  experiments = sorted(p.stem for p in (ROOT / "bandit_sim" / "experiments").glob("*.py") if not p.stem.startswith("_"))
  forbidden = tuple(f"bandit_sim.experiments.{name}" for name in experiments)
  for path in py_files("bandit_sim", "experiments"):
    own = f"bandit_sim.experiments.{path.stem}"
    found = [v for v in violations([path], forbidden) if not v.endswith(own)]
    if path.stem == "__init__":  # the registry imports every experiment
      continue
    assert not found
  cells = []
  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    source = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code")
    cells.extend(f"{notebook.name}: {line.strip()}" for line in source.splitlines()
                 if "bandit_sim.experiments" in line and "_common" not in line)
  assert not cells
  assert not violations(py_files("tests") + py_files("benchmarks"), forbidden)


def test_llm_models_import_nothing_from_training_or_preference():
  assert not violations(py_files("llm", "models"), ("llm.training", "llm.preference", "llm.builtin", "llm.cli"))


@pytest.mark.parametrize("layer, forbidden", [
    ("inference", ("llm.training", "llm.preference", "llm.builtin", "llm.cli")),
    ("parallel", ("llm.models", "llm.training", "llm.preference", "llm.builtin", "llm.cli", "llm.inference")),
    ("training", ("llm.preference", "llm.builtin", "llm.cli")),
    ("preference", ("llm.builtin", "llm.cli")),
])
def test_llm_layers_import_only_downwards(layer, forbidden):
  assert not violations(py_files("llm", layer), forbidden)


def test_llm_and_bandit_sim_do_not_import_each_other():
  assert not violations(py_files("llm"), ("bandit_sim",))
  assert not violations(py_files("bandit_sim"), ("llm",))


def test_importing_gshf_jax_loads_no_heavy_library():
  code = ("import sys, gshf_jax; bad = [m for m in ('flax', 'transformers', 'matplotlib', 'torch') if m in sys.modules];"
          "print(bad); sys.exit(bool(bad))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_family_is_one_folder_and_one_registry_line():
  """Every registered family is a package under llm/models/ exporting the family interface, and the
  shared Transformer and checkpoint I/O name no family."""
  from llm.models import registry
  interface = ("Block", "final_norm", "position_embedding", "architectures", "config_from_hf", "config_to_hf",
               "param_table")
  for model_type, family in registry.FAMILIES.items():
    assert pathlib.Path(family.__file__).parent.parent == ROOT / "llm" / "models", model_type
    assert all(hasattr(family, name) for name in interface), model_type
  for shared in ("transformer.py", "hf_io.py", "config.py", "attention.py", "layers.py"):
    text = (ROOT / "llm" / "models" / shared).read_text()
    assert '"gpt2"' not in text and '"llama"' not in text and "'gpt2'" not in text, shared


def test_public_names_stay_exported():
  import gshf_jax
  import llm
  for name in ("gibbs_logprobs", "kl", "bt_mle", "dpo_loss", "hinge_loss", "ipo_loss", "pairwise_loss",
               "nash_equilibrium", "rso_pairs", "confidence_radius", "elliptical_norm", "best_of_n_logprobs"):
    assert callable(getattr(gshf_jax, name)), name
  for name in ("load_hf_checkpoint", "save_hf_checkpoint", "init_model", "Transformer", "ModelConfig"):
    assert hasattr(llm, name), name
  assert (ROOT / "gshf_jax" / "py.typed").exists() and (ROOT / "llm" / "py.typed").exists()
  assert (ROOT / "bandit_sim" / "py.typed").exists()
