"""The package's import graph, read with `ast`: no circles, and no import from a
lower layer up to a higher one.

Layers, bottom first (a module may import its own layer and those below):
  errors
  algorithms, parallel        pure losses and statistics; meshes and shardings
  models, rewards             the transformer and its checkpoints; verifiers, HERO
  data, sampling              datasets, prompts, tokenizers; the sampler and rollouts
  eval                        metrics, tables, plots, paired statistics
  adaptive                    Reinforce-Ada's rounds (samples and verifies)
  train                       objectives, steps, the loop and every stage
  config_checks, cli          the command line over all of it
"""
import ast
import pathlib

import pytest

LAYERS = (("errors",), ("algorithms", "parallel"), ("models", "rewards"), ("data", "sampling"),
          ("eval",), ("adaptive",), ("train",), ("config_checks", "cli"))
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "hybrid_rl"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path, known: set[str]) -> set[str]:
  """hybrid_rl modules `path` imports anywhere in the file (function bodies too);
  `from pkg import name` counts as pkg.name when that is a module, else pkg."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("hybrid_rl")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hybrid_rl"):
      for a in node.names:
        full = f"{node.module}.{a.name}"
        out.add(full if full in known else node.module)
  return out - {"hybrid_rl"}


def import_graph() -> dict[str, set[str]]:
  paths = sorted(PACKAGE.rglob("*.py"))
  known = {module_name(p) for p in paths}
  return {module_name(p): imported_modules(p, known) for p in paths}


def layer_of(module: str) -> int:
  top = module.split(".")[1] if "." in module else module
  for i, names in enumerate(LAYERS):
    if top in names:
      return i
  raise KeyError(f"{module} is in no layer: add its package to LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
  return sorted(f"{m} ({LAYERS[layer_of(m)][0]} layer) imports {d} ({LAYERS[layer_of(d)][0]} layer)"
                for m, deps in graph.items() if m != "hybrid_rl" for d in deps
                if layer_of(d) > layer_of(m))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One circle through each module that lies on one (depth-first search)."""
  found, state = [], {}  # module -> 1 on the stack, 2 done

  def visit(m, stack):
    state[m] = 1
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 1:
        found.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d, stack)
    stack.pop()
    state[m] = 2

  for m in sorted(graph):
    if m not in state:
      visit(m, [])
  return found


def test_every_package_has_a_layer():
  for m in import_graph():
    if m != "hybrid_rl":
      layer_of(m)


def test_no_import_runs_back_up_a_layer():
  assert upward_imports(import_graph()) == []


def test_the_package_has_no_import_circles():
  assert cycles(import_graph()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"hybrid_rl.train.a": {"hybrid_rl.eval.b"}, "hybrid_rl.eval.b": set()}, []),
    ({"hybrid_rl.eval.b": {"hybrid_rl.train.a"}, "hybrid_rl.train.a": set()},
     ["hybrid_rl.eval.b (eval layer) imports hybrid_rl.train.a (train layer)"]),
])
def test_the_layer_check_sees_an_upward_import(graph, expected):
  assert upward_imports(graph) == expected


def test_the_circle_check_sees_a_circle():
  graph = {"hybrid_rl.data.a": {"hybrid_rl.data.b"}, "hybrid_rl.data.b": {"hybrid_rl.errors"},
           "hybrid_rl.errors": {"hybrid_rl.data.a"}}
  assert cycles(graph) == [["hybrid_rl.data.a", "hybrid_rl.data.b", "hybrid_rl.errors",
                            "hybrid_rl.data.a"]]
  assert cycles({"hybrid_rl.data.a": {"hybrid_rl.data.b"}, "hybrid_rl.data.b": set()}) == []
