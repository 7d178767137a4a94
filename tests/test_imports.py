"""Import direction, read statically (``ast``: nothing is imported, so no torch or matplotlib).

- no import cycle inside ``memaudit``, none inside ``reference_models``, and none between the
  subpackages of ``reference_models`` (``ddpm``, ``ts_diffusion``, ...);
- ``memaudit`` never imports ``reference_models`` (it finds the demo model through an entry point);
- ``reference_models`` imports no private memaudit module (one whose dotted name has a part that
  starts with ``_``) and no private name from a public one.

Every import counts, also one inside a function (it runs later, but it is still a dependency).
Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` (unless the importer lives inside
``a.b``, which is then already initialised), so that edge is drawn too: a package whose
``__init__`` imports a submodule depends on it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("memaudit", "reference_models")


@dataclass(frozen=True)
class Edge:
    target: str  # a module of the two packages
    names: tuple  # names taken from it by ``from target import ...`` (empty for ``import target``)
    where: str  # file:line of the import statement


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's level-1 anchor is its package
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, mods) -> str | None:
    """The longest prefix of ``name`` that is a module of the two packages."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in mods:
            return cand
    return None


def imports_of(module: str, path: Path, mods) -> list[Edge]:
    """Every import of ``module`` into the two packages, at any depth of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT)
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, mods)
                if target is not None:
                    out.append(Edge(target, (), f"{rel}:{node.lineno}"))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            if _known(base, mods) is None:
                continue
            for alias in node.names:  # ``from pkg import sub`` imports the submodule pkg.sub
                sub = f"{base}.{alias.name}"
                if sub in mods:
                    out.append(Edge(sub, (), f"{rel}:{node.lineno}"))
                else:
                    out.append(Edge(_known(base, mods), (alias.name,), f"{rel}:{node.lineno}"))
    return out


def graph() -> tuple[dict, dict]:
    """module -> {imported module: where}, with the edges to the imported modules' packages."""
    mods = module_files()
    edges = {m: {} for m in mods}
    raw = {}
    for m, path in mods.items():
        raw[m] = imports_of(m, path, mods)
        own = {".".join(m.split(".")[:k]) for k in range(1, m.count(".") + 1)}
        if path.name == "__init__.py":
            own.add(m)
        for e in raw[m]:
            parts = e.target.split(".")
            for k in range(1, len(parts) + 1):  # the target and every package above it
                t = ".".join(parts[:k])
                if t in mods and t not in own and t != m:
                    edges[m].setdefault(t, e.where)
    return edges, raw


def find_cycle(edges: dict, nodes) -> list[str] | None:
    """One cycle among ``nodes`` (a list of names, first == last), or None. Depth-first search."""
    nodes = set(nodes)
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for t in sorted(edges.get(n, ())):
            if t not in nodes:
                continue
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(nodes):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _describe(cycle, edges) -> str:
    return "\n".join(f"  {a} -> {b}   ({edges[a][b]})" for a, b in zip(cycle, cycle[1:]))


def _inside(pkg):
    return lambda m: m == pkg or m.startswith(pkg + ".")


def test_the_graph_sees_every_module_and_relative_and_nested_imports():
    edges, raw = graph()
    assert "memaudit.io" in edges and "reference_models.ddpm.train" in edges
    # a relative import at module level, resolved
    assert "reference_models.ddpm.checkpoints" in edges["reference_models.ddpm.train"]
    # an import inside a function (sweep imports train lazily, in its worker)
    assert "reference_models.ddpm.train" in edges["reference_models.ddpm.sweep"]
    # a package's __init__ that imports its submodules depends on them
    assert "reference_models.random_features.dynamics" in edges["reference_models.random_features"]


def test_find_cycle_reports_a_planted_cycle_and_passes_a_dag():
    dag = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {}}
    assert find_cycle(dag, dag) is None
    loop = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:2"}, "c": {"a": "c.py:3"}}
    assert find_cycle(loop, loop) == ["a", "b", "c", "a"]
    assert "c -> a   (c.py:3)" in _describe(find_cycle(loop, loop), loop)


# Cycles that another part of issue 13 removes (the memaudit/report/ package replaces report.py and
# report_membership.py, which import each other for the private _CSS). The exemption applies only
# while both old modules exist, and it must be used: once the cycle is gone, delete the entry.
def test_no_import_cycle_inside_memaudit():
    edges, _ = graph()
    cycle = find_cycle(edges, [m for m in edges if _inside("memaudit")(m)])
    assert cycle is None, "import cycle inside memaudit:\n" + _describe(cycle, edges)


def test_no_import_cycle_inside_reference_models():
    edges, _ = graph()
    cycle = find_cycle(edges, [m for m in edges if _inside("reference_models")(m)])
    assert cycle is None, "import cycle inside reference_models:\n" + _describe(cycle, edges)


def test_no_cycle_between_the_subpackages_of_reference_models():
    """ddpm, ts_diffusion, random_features, ...: dependencies between them go one way."""
    edges, _ = graph()

    def group(m):
        return ".".join(m.split(".")[:2])

    pkg_edges = {}
    for a, targets in edges.items():
        if not _inside("reference_models")(a) or a == "reference_models":
            continue
        for b, where in targets.items():
            if _inside("reference_models")(b) and b != "reference_models" and group(a) != group(b):
                pkg_edges.setdefault(group(a), {}).setdefault(group(b), f"{where}, {a} -> {b}")
    cycle = find_cycle(pkg_edges, set(pkg_edges) | {b for t in pkg_edges.values() for b in t})
    assert cycle is None, ("cycle between subpackages of reference_models:\n"
                           + _describe(cycle, pkg_edges))


def test_memaudit_never_imports_reference_models():
    _, raw = graph()
    bad = [f"{e.where}: {m} imports {e.target}" for m, es in raw.items() if _inside("memaudit")(m)
           for e in es if _inside("reference_models")(e.target)]
    assert bad == [], "memaudit imports reference_models (use the memaudit.demos entry point):\n" \
        + "\n".join(bad)


def test_reference_models_imports_public_memaudit_api_only():
    _, raw = graph()
    bad = []
    for m, es in raw.items():
        if not _inside("reference_models")(m):
            continue
        for e in es:
            if not _inside("memaudit")(e.target):
                continue
            private_module = [p for p in e.target.split(".") if p.startswith("_")]
            private_names = [n for n in e.names if n.startswith("_")]
            if private_module or private_names:
                what = e.target + (f" ({', '.join(private_names)})" if private_names else "")
                bad.append(f"{e.where}: {m} imports private {what}")
    assert bad == [], "reference_models uses private memaudit API:\n" + "\n".join(bad)
