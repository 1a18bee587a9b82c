"""The module graph: no import circle in fkp_live/ or train/ (imports inside functions count too),
no library module imports a command module, and the runtime never imports train."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("fkp_live", "train"):
        for p in sorted((ROOT / top).rglob("*.py")):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from PKG import NAME`: the submodule PKG.NAME where there is one, else PKG itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import fkp_live.io.mp4` names its module; strip what is not one
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_runtime_or_the_toolkit():
    assert _circles(_graph()) == []


def test_the_library_never_imports_a_command_module():
    commands = ("fkp_live.commands", "fkp_live.cli")
    bad = {m: sorted(t for t in ts if t.startswith(commands)) for m, ts in _graph().items()
           if m.startswith("fkp_live") and not m.startswith(commands)}
    assert {m: ts for m, ts in bad.items() if ts} == {}


def test_the_runtime_never_imports_train():
    bad = {m: sorted(t for t in ts if t.split(".")[0] == "train") for m, ts in _graph().items()
           if m.startswith("fkp_live")}
    assert {m: ts for m, ts in bad.items() if ts} == {}
