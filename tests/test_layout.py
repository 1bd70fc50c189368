"""The packages' layouts: every module listed in its order (``helpers/`` in the README's tree, ``benchmarks/`` in its
``__init__`` docstring), and each importing only modules listed above it, at its top or inside functions (so the
imports form no circle, and a reader can follow the flow top to bottom)."""

import ast
import re
import sys

import pytest

from helpers.settings import REPO_ROOT

PACKAGES = ("helpers", "benchmarks")


def listed_order(package: str) -> list[str]:
    """The modules in their listed order (``training*.py`` stands for helpers' training modules)."""
    if package == "helpers":
        readme = (REPO_ROOT / "README.md").read_text()
        tree = readme[readme.index("helpers/\n") : readme.index("\nbenchmarks/")]
        return re.findall(r"^  (\w+)\*?\.py", tree, re.M)
    docstring = ast.get_docstring(ast.parse((REPO_ROOT / package / "__init__.py").read_text()))
    return re.findall(r"^    (\w+)\.py ", docstring, re.M)


def listed_as(module: str) -> str:
    return "training" if module.startswith("training") else module


def imports_of(package: str, module: str) -> set[str]:
    """The modules of ``package`` that one of its modules imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse((REPO_ROOT / package / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .x import y, from . import x
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == package:  # from benchmarks import x
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{package}."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith(f"{package}.")}
    return found


def modules(package: str) -> list[str]:
    return sorted(path.stem for path in (REPO_ROOT / package).glob("*.py") if not path.stem.startswith("__"))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_listed(package):
    assert {listed_as(module) for module in modules(package)} == set(listed_order(package))


@pytest.mark.parametrize("package", PACKAGES)
def test_each_module_imports_only_modules_listed_above_it(package):
    order = listed_order(package)
    upward = [
        f"{module} imports {imported}"
        for module in modules(package)
        for imported in imports_of(package, module)
        if order.index(listed_as(imported)) > order.index(listed_as(module))
    ]
    assert not upward, upward


def test_the_import_reader_sees_every_form_of_import(tmp_path, monkeypatch):
    """Function-local imports count too: they hid the benchmarks' circle before."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        "from .a import x\nfrom . import b\nfrom pkg import c\nfrom pkg.d import y\nimport pkg.e\n"
        "def f():\n    from pkg.g import z\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    assert imports_of("pkg", "m") == {"a", "b", "c", "d", "e", "g"}
