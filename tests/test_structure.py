"""The package's shape: its modules import each other without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lightyard

PACKAGE = Path(lightyard.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def lazy_tables(paths: dict[str, Path], modules: set[str]) -> dict[str, dict[str, str]]:
    """Per package, the attributes its `lazy_attributes` table imports on first use, and from where."""
    tables: dict[str, dict[str, str]] = {}
    for name, path in paths.items():
        if path.name != "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                pairs = zip(node.keys, node.values, strict=True)
                tables.setdefault(name, {}).update(
                    {k.value: v.value for k, v in pairs if isinstance(v, ast.Constant) and v.value in modules}
                )
    return tables


def imported(tree: ast.AST, modules: set[str], lazy: dict[str, dict[str, str]]) -> set[str]:
    """The lightyard modules a module's code imports, at any depth but `if TYPE_CHECKING:` (never run),
    with the packages each import runs on its way; `from package import name` of a lazy attribute
    imports the module the package's table names."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if is_type_checking(node):
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            table = lazy.get(node.module, {})
            names += [table[alias.name] for alias in node.names if alias.name in table]
        for name in names:
            parts = name.split(".")
            for end in range(2, len(parts) + 1):
                if (candidate := ".".join(parts[:end])) in modules:
                    found.add(candidate)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modules it imports; a module's own packages are left out (Python runs them before it,
    so they are never a cycle)."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    lazy = lazy_tables(paths, modules)
    graph = {}
    for name, path in paths.items():
        parents = {".".join(name.split(".")[:end]) for end in range(1, name.count(".") + 2)}
        graph[name] = imported(ast.parse(path.read_text()), modules, lazy) - parents
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return [*path[path.index(successor) :], successor]
            if successor not in state and (cycle := walk(successor)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert graph["lightyard.registry.registered"] >= {"lightyard.models.loading"}  # the graph sees edges
    cycle = find_cycle(graph)
    assert cycle is None, " → ".join(cycle or [])


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def declared(group: str | None = None) -> set[str]:
    """The distributions pyproject.toml declares (`group`: an optional-dependencies group), normalised."""
    import re
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {normalise(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def normalise(distribution: str) -> str:
    return distribution.lower().replace("_", "-").replace(".", "-")


def third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level module imported → the files importing it, stdlib and lightyard's own left out."""
    import sys

    own = {"lightyard", "hydra_plugins", "tests", "__future__", *(path.stem for path in paths)}
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own:
                    found.setdefault(top, set()).add(path.name)
    return found


def undeclared(paths: list[Path], allowed: set[str]) -> list[str]:
    from importlib.metadata import packages_distributions

    distributions = packages_distributions()
    problems = []
    for module, files in sorted(third_party_imports(paths).items()):
        provided = {normalise(name) for name in distributions.get(module, [module])}
        if not provided & allowed:
            problems.append(
                f"{module} ({', '.join(sorted(provided))}) imported by {', '.join(sorted(files))}"
            )
    return problems


def test_every_imported_package_is_declared() -> None:
    """What deptry checks: a package imported directly is a dependency of our own, not one that happens to
    come with another (BentoML's starlette, Hydra's omegaconf), which could go in their next release."""
    root = PACKAGE.parents[1]
    shipped = [*PACKAGE.parent.rglob("*.py"), root / "train.py", root / "serve.py"]
    problems = undeclared(shipped, declared())
    assert not problems, problems
    tests_and_benches = [*(root / "tests").rglob("*.py"), *(root / "bench").rglob("*.py")]
    problems = undeclared(tests_and_benches, declared() | declared("dev"))
    assert not problems, problems


def test_an_undeclared_import_is_found(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import numpy\nfrom starlette.requests import Request\nimport json\n")
    assert undeclared([module], {"numpy"}) == ["starlette (starlette) imported by m.py"]


def test_bentoml_internals_are_the_ones_read() -> None:
    """The adapter subclasses and imports BentoML's private modules: a BentoML that changed them fails
    here, and at `bentoml serve`, in one line naming what changed."""
    from lightyard.bentoml_adapter import internals_problem

    assert internals_problem() is None
    changed = {"bentoml._internal.marshal.dispatcher": {"CorkDispatcher": ("max_latency",)}}
    assert "CorkDispatcher takes no max_latency" in internals_problem(changed)


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
def test_deprecations_from_lightyard_code_fail_the_tests(category: type[Warning]) -> None:
    """pyproject.toml's filters: a deprecated API lightyard calls is an error under pytest, one a library
    calls inside itself is not."""
    import warnings

    with pytest.raises(category):
        warnings.warn_explicit(
            "old", category, "lightyard/export/writers.py", 1, module="lightyard.export.writers"
        )
    warnings.warn_explicit("old", category, "torch/jit/_trace.py", 1, module="torch.jit._trace")


def test_bench_readme_lists_every_script() -> None:
    """bench/README.md says what each script measures and whether `make bench` runs it: none is missing,
    and what it says `make bench` runs is what the Makefile runs."""
    import re

    root = PACKAGE.parents[1]
    readme = (root / "bench" / "README.md").read_text()
    listed = set(re.findall(r"`(\w+)\.py", readme))
    assert {path.stem for path in (root / "bench").glob("*.py")} <= listed
    in_make = {row.split("`")[1].split(".py")[0] for row in readme.splitlines() if row.endswith("| yes |")}
    in_make |= {row.split("`")[1].split(".py")[0] for row in readme.splitlines() if "| yes, " in row}
    makefile = (root / "Makefile").read_text()
    target = makefile[makefile.index("\nbench:") :].split("\n\n")[0]
    assert in_make == set(re.findall(r"bench/(\w+)\.py", target))
