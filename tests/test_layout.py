"""The package's architecture: each layer imports only the layers below it, and no module is long."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyro_svae")
# lowest first: a module may import its own layer and those before it
LAYERS = [("errors", "devices", "checkpoint", "progress"), ("data",), ("models",), ("inference",), ("evaluation",),
          ("training",), ("app",)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, "."), path


def imported(module, path):
    """The top-level parts of pyro_svae that ``module`` imports (relative or absolute)."""
    package = module.split(".")[:-1]  # a package's __init__ too: "models.__init__" -> ["models"]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("pyro_svae"):
                target = node.module.split(".")[1:]
            else:
                continue
            if not target:  # from . import __version__
                continue
            yield target[0]


def layer(module):
    return RANK[module.split(".")[0]]


@pytest.mark.parametrize("module,path", [m for m in modules() if m[0] != "__init__"])
def test_a_module_imports_only_its_layer_and_those_below(module, path):
    above = [t for t in imported(module, path) if t in RANK and RANK[t] > layer(module)]
    assert not above, f"{module} imports {above}, above its layer"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..training.run import train\n")
    assert list(imported("models.m", str(path))) == ["training"]


@pytest.mark.parametrize("module,path", list(modules()))
def test_no_module_is_over_about_400_lines(module, path):
    assert sum(1 for _ in open(path)) <= 420, module
