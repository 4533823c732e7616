"""The layer rules of docs/architecture.md, checked on the import graph of the source (no module is imported).

Every module of ``kerasseg`` belongs to one layer; it may import only from its own layer or below. Imports inside
functions count: a lazy import upwards is still an upward dependency. Besides the layers: no import circles, no
private name imported from another module, ``tools/`` scripts are thin, and ``tflite/`` (the device runtime) needs
neither TensorFlow nor kerasseg.
"""

from __future__ import annotations

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Longest prefix wins. The numbers are the layers of docs/architecture.md, from the ground up.
LAYERS = {
    "kerasseg.errors": 1, "kerasseg.preprocessing": 1, "kerasseg.saving": 1, "kerasseg.visualize": 1,
    "kerasseg.losses": 1, "kerasseg.torch_checkpoint": 1, "kerasseg.layers": 1, "kerasseg.blocks": 1,
    "kerasseg.registry": 2, "kerasseg.backbones": 2, "kerasseg.models": 2, "kerasseg.zoo": 2,
    "kerasseg.pytorch_weights": 2, "kerasseg.analysis": 2,
    "kerasseg.data": 3,
    "kerasseg.runtimes": 4,
    "kerasseg.evaluation": 5, "kerasseg.metrics": 5,
    "kerasseg.export": 6, "kerasseg.qat": 6,
    "kerasseg.training": 7,
    "kerasseg.cli": 8,
}
# The facade re-exports the model-level API only: `import kerasseg` stays cheap and never pulls in export or training.
FACADE_MAX_LAYER = 2
LAYER_NAMES = {1: "base", 2: "models", 3: "data", 4: "runtimes", 5: "evaluation", 6: "export", 7: "training", 8: "cli"}

# The device runtime runs where TensorFlow does not: the standard library, numpy, Pillow and LiteRT (with the
# flatbuffers runtime LiteRT depends on) only.
TFLITE_ALLOWED = {"numpy", "PIL", "ai_edge_litert", "tflite_runtime", "flatbuffers"}


def _modules(package_dir: str, package: str) -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(package_dir))
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = os.path.join(folder, name)
    assert package in found
    return found


MODULES = _modules(os.path.join(ROOT, "kerasseg"), "kerasseg")


def _imports(path: str, module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement of a file, at any depth."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found += [(target, alias.name, node.lineno) for alias in node.names]
    return found


def _resolve(target: str, name: str | None) -> str:
    """The kerasseg module an import binds: ``from pkg import sub`` is the submodule, else the named module."""
    if name is not None and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def _edges() -> dict[str, set[tuple[str, int]]]:
    graph = {}
    for module, path in MODULES.items():
        graph[module] = {(_resolve(target, name), line) for target, name, line in _imports(path, module)
                         if target == "kerasseg" or target.startswith("kerasseg.")}
        graph[module] = {(t, line) for t, line in graph[module] if t != module}
    return graph


GRAPH = _edges()


def layer_of(module: str) -> int | None:
    if module == "kerasseg":
        return FACADE_MAX_LAYER
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYERS[best] if best else None


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"Place these modules in a layer (tests/test_architecture.py LAYERS and docs/architecture.md): {missing}"


def test_imports_point_down():
    upward = []
    for module, targets in GRAPH.items():
        own = layer_of(module)
        for target, line in targets:
            if layer_of(target) > own:
                upward.append(f"{module} (layer {own}, {LAYER_NAMES[own]}) imports {target} "
                              f"(layer {layer_of(target)}, {LAYER_NAMES[layer_of(target)]}) at line {line}")
    assert not upward, "Imports must point down:\n" + "\n".join(sorted(upward))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_cycles_finder_finds_a_circle():
    # The rule above is only as good as the finder: a known circle must be found.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = {module: {t for t, _ in targets} for module, targets in GRAPH.items()}
    assert _cycles(graph) == []


def _private_imports(paths_and_modules) -> list[str]:
    found = []
    for module, path in paths_and_modules:
        for target, name, line in _imports(path, module):
            if not target or not (target == "kerasseg" or target.startswith("kerasseg.")):
                continue
            names = [name] if name else []
            # A private module may serve its own package (kerasseg.layers._twin), nobody else.
            parts = target.split(".") + names
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if module != owner and not module.startswith(owner + "."):
                        found.append(f"{path}:{line}: {module} imports {'.'.join(parts[:i + 1])}")
                    break
    return found


def test_no_private_names_across_modules():
    tools = [(f"tools.{name[:-3]}", os.path.join(ROOT, "tools", name))
             for name in os.listdir(os.path.join(ROOT, "tools")) if name.endswith(".py")]
    found = _private_imports(list(MODULES.items()) + tools)
    assert not found, "Private names imported across modules:\n" + "\n".join(found)


def test_private_import_finder_flags_a_reach(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from kerasseg.data.folder import _scan\nfrom kerasseg.layers._twin import x\n")
    found = _private_imports([("kerasseg.data.pipeline", str(path))])
    assert [f.split(": ", 1)[1] for f in found] == [
        "kerasseg.data.pipeline imports kerasseg.data.folder._scan",
        "kerasseg.data.pipeline imports kerasseg.layers._twin"]
    # Within its own package a private module is fair to use.
    assert [f.split(": ", 1)[1] for f in _private_imports([("kerasseg.layers.argmax", str(path))])] == [
        "kerasseg.layers.argmax imports kerasseg.data.folder._scan"]


TOOLS_WITH_OWN_CODE = {
    # Runs once, in a separate PyTorch environment without kerasseg (it produces the golden data of the tests).
    "make_torch_golden.py",
}


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(ROOT, "tools"))
                                        if n.endswith(".py") and n not in TOOLS_WITH_OWN_CODE))
def test_tools_are_thin_scripts_over_the_cli(name):
    path = os.path.join(ROOT, "tools", name)
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert not defined, f"{path} defines {defined}: argument parsing and logic belong in kerasseg.cli"
    imports = {target for target, _, _ in _imports(path, f"tools.{name[:-3]}")}
    assert any(t == "kerasseg.cli" or t.startswith("kerasseg.cli.") for t in imports), (
        f"{path} must call into kerasseg.cli; it imports {sorted(imports)}")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(ROOT, "tflite")) if n.endswith(".py")))
def test_device_runtime_needs_no_tensorflow(name):
    path = os.path.join(ROOT, "tflite", name)
    own = {n[:-3] for n in os.listdir(os.path.join(ROOT, "tflite")) if n.endswith(".py")}
    tops = {target.split(".")[0] for target, _, _ in _imports(path, f"tflite.{name[:-3]}") if target}
    outside = sorted(t for t in tops - own - TFLITE_ALLOWED - {"tflite", "__future__"}
                     if t not in sys.stdlib_module_names)
    assert not outside, f"{path} imports {outside}; the device runtime may use only {sorted(TFLITE_ALLOWED)}"


def _shadowing(modules: dict[str, str]) -> list[str]:
    """Names a package binds to something else than its submodule of the same name (``pkg.x`` would then mean the
    function after ``import pkg`` and the module after ``import pkg.x``)."""
    found = []
    for package, path in modules.items():
        if os.path.basename(path) != "__init__.py":
            continue
        for target, name, line in _imports(path, package):
            if name is None or f"{package}.{name}" not in modules:
                continue
            if target != package:
                found.append(f"{path}:{line}: {package}.{name} is bound to {target}.{name}, hiding the submodule")
    return found


def test_no_name_hides_a_submodule():
    found = _shadowing(MODULES)
    assert not found, "\n".join(found)


def test_shadowing_finder_flags_a_function_named_like_its_module(tmp_path):
    (tmp_path / "pkg").mkdir()
    init = tmp_path / "pkg" / "__init__.py"
    init.write_text("from pkg.check import check\nfrom pkg import tools\n")
    modules = {"pkg": str(init), "pkg.check": str(tmp_path / "pkg" / "check.py"), "pkg.tools": "tools.py"}
    assert [f.split(": ", 1)[1] for f in _shadowing(modules)] == [
        "pkg.check is bound to pkg.check.check, hiding the submodule"]


RESULT_SUFFIXES = ("Result", "Report", "Row", "Finding", "Scores", "Error")


def test_result_objects_have_to_dict():
    # Every result a function returns serialises the same way; exceptions are excluded by their base class.
    missing = []
    for module, path in MODULES.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
            if not node.name.endswith(RESULT_SUFFIXES) or any(b.endswith(("Error", "Exception")) for b in bases):
                continue
            if node.name.endswith("Error") and bases:
                continue
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            if "to_dict" not in methods and not bases - {"object"}:
                missing.append(f"{module}.{node.name}")
    assert not missing, f"Result classes without to_dict(): {missing}"
