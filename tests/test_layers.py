"""The package's layers, read from its source: no import circle, no upward import, and no
function-level import of the package's own modules (only optional third-party ones)."""

from __future__ import annotations

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxkde"

#: What each layer may import besides itself (docs/architecture.md).
ALLOWED = {
    "_validation": set(),
    "core": {"_validation"},
    "scale": {"_validation", "core"},
    "stats": {"_validation", "core"},
    "variants": {"_validation", "core"},
    "bandwidth": {"_validation", "core", "scale"},
    "estimator": {"_validation", "core", "scale", "bandwidth", "stats", "variants"},
    "apps": {"_validation", "core", "scale", "bandwidth", "stats", "variants", "estimator"},
}
#: Third-party packages that stay optional: imported inside the functions that need them.
OPTIONAL = {"sklearn", "matplotlib", "PIL", "tqdm"}  # the test, plot and cli extras


def module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")


def imports() -> tuple[dict[str, set[str]], list[str], list[str]]:
    """``(edges, lazy, third_party_lazy)``: the package's modules each imports, and the
    function-level imports (own modules; others) as ``"module:function -> target"``."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges, lazy, other = collections.defaultdict(set), [], []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def visit(node, function, name=name, package=package):
            for child in ast.iter_child_nodes(node):
                inner = function
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    inner = function or child.name
                targets = []
                if isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        base = ".".join([package.rsplit(".", child.level - 1)[0], base]).strip(".")
                    # ``from package import module`` depends on the module, not on what the
                    # package's __init__ re-exports.
                    subs = [f"{base}.{a.name}" for a in child.names]
                    targets = [s for s in subs if s in modules] or [base]
                elif isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                own = [t for t in targets if t.split(".")[0] == "jaxkde"]
                for t in own:
                    while t not in modules and "." in t:
                        t = t.rpartition(".")[0]
                    if t in modules and t != name:
                        edges[name].add(t)
                if function and targets:
                    where = f"{name}:{function} -> {targets[0]}"
                    (lazy if own else other).append(where)
                visit(child, inner)

        visit(ast.parse(path.read_text()), None)
    return edges, lazy, other


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_no_import_circle():
    edges, _, _ = imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_every_import_points_down_the_layers():
    edges, _, _ = imports()
    upward = [
        f"{m} -> {t}"
        for m, targets in edges.items()
        for t in targets
        if layer(m) and layer(t) and layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))
    # The layers import nothing of the package's top level (its __init__ or _compat).
    top = [f"{m} -> {t}" for m, ts in edges.items() for t in ts if layer(m) and not layer(t)]
    assert not top, top


def test_function_level_imports_are_optional_third_party_only():
    _, lazy, other = imports()
    assert not lazy, "function-level imports of the package's modules:\n" + "\n".join(lazy)
    stray = [w for w in other if w.rpartition(" -> ")[2].split(".")[0] not in OPTIONAL]
    assert not stray, "function-level imports of required packages:\n" + "\n".join(stray)


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: on a copy of two modules that import each other."""
    pkg = tmp_path / "jaxkde"
    (pkg / "core").mkdir(parents=True)
    (pkg / "estimator").mkdir()
    for f in ("__init__.py", "core/__init__.py", "estimator/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "core/a.py").write_text("from jaxkde.estimator.b import x\n")
    (pkg / "estimator/b.py").write_text("def x():\n    from jaxkde.core.a import y\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    edges, lazy, _ = imports()
    assert edges["jaxkde.core.a"] == {"jaxkde.estimator.b"}
    assert lazy == ["jaxkde.estimator.b:x -> jaxkde.core.a"]
    try:
        test_no_import_circle()
    except AssertionError as exc:
        assert "import circle" in str(exc)
    else:
        raise AssertionError("the circle was not seen")
