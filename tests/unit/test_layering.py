"""How the pack's modules may import each other (the design card): imports run one way (no two modules importing each
other, also through function-level imports), trainer/ never imports ComfyUI's UI module ``nodes`` nor the pack's own
nodes/ package, and nodes/ only translate (they may import trainer/)."""
import ast
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]
PACKAGES = ("trainer", "nodes", "selftest")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACK).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path):
    """(absolute module names this file imports, including inside functions; pack-relative ones resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                out.add(target)
                if not node.module:   # from . import a, b: each is a module
                    out |= {f"{target}.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


def _graph():
    files = [p for pkg in PACKAGES for p in (PACK / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}, modules


def test_no_two_pack_modules_import_each_other():
    graph, _ = _graph()
    cycles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph[m]):
            if n.endswith("__init__") or n in PACKAGES:   # a package's __init__ re-exporting its modules is no cycle
                continue
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"
    for m in sorted(graph):
        if m not in state and m not in PACKAGES:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_imports_comfyui_internals_not_its_ui_module():
    """Neither ComfyUI's ``nodes`` (absolute) nor the pack's nodes/ (relative: resolved to the same name here)."""
    _, modules = _graph()
    bad = {m: sorted(i for i in _imports(p) if i == "nodes" or i.startswith("nodes."))
           for m, p in modules.items() if m.startswith("trainer")}
    assert not {m: b for m, b in bad.items() if b}, bad


def test_the_scan_sees_cycles_and_ui_imports(tmp_path, monkeypatch):
    """The checks above would fail: a module pair importing each other (one inside a function) and a core module
    importing ComfyUI's nodes are found."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "trainer" / "a.py").write_text("from .b import x\n")
    (tmp_path / "trainer" / "b.py").write_text("def f():\n    from .a import y\n")
    (tmp_path / "trainer" / "c.py").write_text("from nodes import common_ksampler\n")
    monkeypatch.setattr(sys.modules[__name__], "PACK", tmp_path)
    graph, modules = _graph()
    assert graph["trainer.a"] == {"trainer.b"} and graph["trainer.b"] == {"trainer.a"}
    assert "nodes" in _imports(modules["trainer.c"])
    try:
        test_no_two_pack_modules_import_each_other()
    except AssertionError as e:
        assert "trainer.a -> trainer.b -> trainer.a" in str(e)
    else:
        raise AssertionError("the cycle was not found")
