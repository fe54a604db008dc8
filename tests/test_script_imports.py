"""Every name the experiment scripts and configs take from the package exists.

Scripts under experiments/ (benchmarks included) run for minutes to hours and most
are run by no test, so a module moved or a function renamed in hybrid_rl would
break them silently. This reads each script with `ast` and checks every
`from hybrid_rl... import name` and every `module.attribute` it uses of a
hybrid_rl module against the package itself (nothing of the script runs).
"""
import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for d in ("experiments", "configs") for p in (ROOT / d).rglob("*.py"))
LOCAL_PACKAGES = ("hybrid_rl", "experiments", "configs")


def _resolve(module: str, name: str):
  """module.name as an attribute or a submodule, or None."""
  mod = importlib.import_module(module)
  if hasattr(mod, name):
    return getattr(mod, name)
  try:
    return importlib.import_module(f"{module}.{name}")
  except ModuleNotFoundError:
    return None


def missing_names(path: pathlib.Path) -> list[str]:
  tree = ast.parse(path.read_text())
  bound, missing = {}, []  # local name -> module object it is bound to
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
        node.module.split(".")[0] in LOCAL_PACKAGES):
      for alias in node.names:
        value = _resolve(node.module, alias.name)
        if value is None:
          missing.append(f"line {node.lineno}: from {node.module} import {alias.name}")
        elif type(value).__name__ == "module":
          bound[alias.asname or alias.name] = value
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] in LOCAL_PACKAGES and alias.asname:
          bound[alias.asname] = importlib.import_module(alias.name)
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in bound and not hasattr(bound[node.value.id], node.attr)
        and _resolve(bound[node.value.id].__name__, node.attr) is None):
      missing.append(f"line {node.lineno}: {node.value.id}.{node.attr} "
                     f"({bound[node.value.id].__name__} has no {node.attr})")
  return missing


@pytest.mark.parametrize("path", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_every_package_name_a_script_uses_exists(path):
  assert missing_names(path) == []


def test_the_check_sees_a_renamed_function(tmp_path):
  script = tmp_path / "old.py"
  script.write_text("from hybrid_rl.train import stage_runs\n"
                    "from hybrid_rl.train import rollouts\n"
                    "stage_runs.run_stage(None, '')\nstage_runs.planned_stages(None)\n")
  assert missing_names(script) == [
      "line 2: from hybrid_rl.train import rollouts",
      "line 4: stage_runs.planned_stages (hybrid_rl.train.stage_runs has no planned_stages)"]
