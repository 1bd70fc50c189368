"""The package's layout as the README draws it: every module listed, and each importing only modules listed above it
(so the imports form no circle, and a reader can follow the flow top to bottom)."""

import ast
import re

from helpers.settings import REPO_ROOT

HELPERS = REPO_ROOT / "helpers"


def listed_order() -> list[str]:
    """The modules in the order of the README's ``helpers/`` tree (``training*.py`` stands for its modules)."""
    readme = (REPO_ROOT / "README.md").read_text()
    tree = readme[readme.index("helpers/\n") : readme.index("\nbenchmarks/")]
    return re.findall(r"^  (\w+)\*?\.py", tree, re.M)


def listed_as(module: str) -> str:
    return "training" if module.startswith("training") else module


def imports_of(module: str) -> set[str]:
    """The ``helpers`` modules a module imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse((HELPERS / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.module.startswith("helpers."):
                found.add(node.module.split(".")[1])
    return found


def modules() -> list[str]:
    return sorted(path.stem for path in HELPERS.glob("*.py") if not path.stem.startswith("__"))


def test_every_module_is_in_the_readme_tree():
    assert {listed_as(module) for module in modules()} == set(listed_order())


def test_each_module_imports_only_modules_listed_above_it():
    order = listed_order()
    upward = [
        f"{module} imports {imported}"
        for module in modules()
        for imported in imports_of(module)
        if order.index(listed_as(imported)) > order.index(listed_as(module))
    ]
    assert not upward, upward
