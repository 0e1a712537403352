"""The package imports in one direction: no module imports names from a module that imports
it back at the top level (a circle works only by the order of its imports); no module
imports the fixture tooling of the checkout (``fixtures.build``), which the wheel leaves out;
and start-up imports what it uses: the plugin imports no model library, collection no model
code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conformance import PACKAGE_DIR


def _top_level_imports() -> dict[str, set[str]]:
    """Module -> the conformance modules its top-level ``from ... import`` statements read
    (a name that is a submodule counts as that submodule)."""
    root = PACKAGE_DIR.parent
    graph: dict[str, set[str]] = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                module = base + (f".{node.module}" if node.module else "")
            else:
                module = node.module or ""
            if module.split(".")[0] != "conformance":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                is_module = (root / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    root / Path(*sub.split(".")) / "__init__.py").exists()
                deps.add(sub if is_module else module)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[str]:
    found: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        for dep in graph.get(node, ()):
            if dep in stack:
                found.add(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep in graph and len(stack) < 40:
                visit(dep, [*stack, dep])

    for name in graph:
        visit(name, [name])
    return found


def test_no_import_circle():
    assert _cycles(_top_level_imports()) == set()


def test_the_check_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == {"a -> b -> a", "b -> a -> b"}


#: the checkout's tooling that builds the embedded models: not in the installed package
TOOLING = "fixtures"


def tooling_imports(package: Path) -> list[str]:
    """``FILE:LINE: MODULE`` for every import of :data:`TOOLING` anywhere in ``package``'s
    modules (at the top level or inside a function), and every string that names one of its
    modules (an ``importlib.import_module`` argument)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.startswith(f"{TOOLING}.") else []
            else:
                continue
            found += [f"{path.relative_to(package.parent)}:{node.lineno}: {name}"
                      for name in names if name.split(".")[0] == TOOLING]
    return found


def test_no_module_of_the_package_imports_the_fixture_tooling():
    assert tooling_imports(PACKAGE_DIR) == []


def test_the_check_finds_an_import_of_the_tooling(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("from fixtures.build import tiny\nimport fixtures_other\n")
    (package / "sub" / "b.py").write_text(
        "import importlib\n\ndef f():\n    import fixtures.build.train\n"
        "    return importlib.import_module('fixtures.build.montage')\n"
        "\nTEXT = 'python -m fixtures.build train'\n")
    assert tooling_imports(package) == ["pkg/a.py:1: fixtures.build",
                                        "pkg/sub/b.py:4: fixtures.build.train",
                                        "pkg/sub/b.py:5: fixtures.build.montage"]


# what start-up imports ------------------------------------------------------------------
#: what a conformance run needs only once it loads a model or measures images: diffusers'
#: model and pipeline classes and what they bring in (peft whenever it is installed, the
#: single-file conversion code and with it scipy.stats), the metrics' libraries
MODEL_CODE = ("diffusers.models", "diffusers.pipelines", "diffusers.loaders.single_file_utils",
              "peft", "scipy.stats", "skimage", "flip_evaluator", "imagehash")


def _imported(code: str, names: tuple[str, ...]) -> tuple[int, list[str]]:
    """Run ``code`` (which sets ``rc``) in a fresh interpreter, from the project root so that
    ``conformance`` is this checkout's: ``rc`` and which of ``names`` it imported."""
    probe = (f"import sys\nrc = 0\n{code}\n"
             f"print('IMPORTED', rc, *[n for n in {names!r} if n in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=PACKAGE_DIR.parent, timeout=600)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0 and last.startswith("IMPORTED "), proc.stdout + proc.stderr
    _, rc, *found = last.split()
    return int(rc), found


def test_the_plugin_session_and_runner_import_no_library_of_the_model():
    """What every pytest process in the environment imports with the plugin (and a worker
    before its first test) imports neither torch nor diffusers nor what they bring in."""
    rc, found = _imported("import conformance.plugin, conformance.session, conformance.generate",
                          ("torch", "diffusers", "transformers", *MODEL_CODE))
    assert (rc, found) == (0, [])


def test_collecting_a_run_without_lora_imports_no_model_code():
    """Collection reads the hardware class and the CPU's features for the known deviations,
    without the probe battery: no model library (diffusers, transformers, torch's compiler
    stack), so no peft, no single-file conversion, no scipy.stats."""
    rc, found = _imported(
        "import pytest\nrc = int(pytest.main(['conformance', '--collect-only', '-q', "
        "'-p', 'no:cacheprovider', '-k', 'tiny-sd and fp32']))",
        ("diffusers", "transformers", "torch._dynamo", *MODEL_CODE))
    assert (rc, found) == (0, [])
