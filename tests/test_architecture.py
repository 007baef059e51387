"""The package's import graph: no circles, and no more floors than the layering allows.

Every import of a project module counts, wherever it stands (top level, inside a function, under
``if TYPE_CHECKING:``): a loop closed by a lazy or type-only import is still a loop a reader has to
hold in mind. A package ``__init__`` that only re-exports (no function or class of its own) is not
a target. This is the analysis of ``shared/tools/import_graph.py``, kept here so that the suite
fails when a circle appears.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The longest chain of imports allowed.
MAX_FLOORS = 11

#: The layers of docs/ARCHITECTURE.md, top to bottom: module-name prefixes (below ``sagellm_backend``;
#: the longest matching prefix places a module). A module imports only from its own layer or lower ones.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("entry points", ("__main__", "cli", "bench", "testing")),
    (
        "lookup",
        ("", "registry", "provider_table", "provider_entry", "providers", "compat", "contract", "base", "capability"),
    ),
    ("lookup", ("hardware", "_version")),
    ("vendors", ("vendors",)),
    ("core", ("core",)),
    ("parts", ("storage", "comm", "attention", "kernels", "mock", "dtype_conversion")),
    ("contract and pool", ("api", "api.provider", "kv")),
    ("contract types", ("api.blocks", "api.streams", "api.comm", "api.kernels", "streams", "core.config")),
    ("contract types", ("kv.geometry", "kv.allocator", "kv.ids", "selection")),
    ("ground", ("protocol", "device", "core.validate", "errors")),
)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(root: Path, path: Path, modules: set[str]) -> set[str]:
    me = _module_name(root, path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:
                    out.add(sub)
                elif target in modules:
                    out.add(target)
    out.discard(me)
    return out


def _is_reexport_init(path: Path) -> bool:
    if path.name != "__init__.py":
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (re-export-only packages left out as targets)."""
    files = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    names = set(files)
    skip = {m for m, p in files.items() if _is_reexport_init(p)}
    return {m: _imports(root, p, names) - skip for m, p in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Floor of every module of an acyclic graph: 1 + the highest floor it imports (leaves are 1)."""
    out: dict[str, int] = {}

    def floor(m: str) -> int:
        if m not in out:
            out[m] = 1 + max((floor(t) for t in graph[m]), default=0)
        return out[m]

    for m in graph:
        floor(m)
    return out


def _chain(graph: dict[str, set[str]], level: dict[str, int]) -> list[str]:
    m = max(level, key=lambda k: (level[k], k))
    chain = [m]
    while graph[m]:
        m = max(graph[m], key=lambda k: (level[k], k))
        chain.append(m)
    return chain


def test_the_package_has_no_import_circle() -> None:
    found = circles(import_graph(SRC))
    assert not found, "import circles (lazy and TYPE_CHECKING imports count): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_the_longest_import_chain_stays_within_the_floors() -> None:
    graph = import_graph(SRC)
    level = floors(graph)
    top = max(level.values())
    assert top <= MAX_FLOORS, f"{top} floors > {MAX_FLOORS}: " + " -> ".join(_chain(graph, level))


def layer_of(module: str) -> int:
    """Index into :data:`LAYERS` of the layer holding ``module`` (a full dotted name)."""
    name = module.partition(".")[2]
    best = (-1, -1)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (prefix and name.startswith(prefix + ".")):
                best = max(best, (len(prefix), index))
    assert best[1] >= 0, f"{module} is in no layer of LAYERS: add it there and to docs/ARCHITECTURE.md"
    return best[1]


def test_imports_point_down_the_layers() -> None:
    graph = import_graph(SRC)
    names = [n for n, _ in LAYERS]
    up = [
        f"{m} ({names[layer_of(m)]}) -> {t} ({names[layer_of(t)]})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if names.index(names[layer_of(t)]) < names.index(names[layer_of(m)])
    ]
    assert not up, "imports pointing up a layer: " + "; ".join(up)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_analysis_sees_circles_closed_by_lazy_and_type_only_imports(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import A\n",
            "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nclass A: ...\n",
            "pkg/b.py": "def f():\n    from . import c\n",
            "pkg/c.py": "from pkg.a import A\n",
            "pkg/d.py": "from . import a\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_floors_count_the_longest_chain_and_skip_reexport_packages(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .top import run\n",
            "pkg/top.py": "from .mid import g\nimport pkg\ndef run(): ...\n",
            "pkg/mid.py": "from .low import x\nfrom ..pkg import low\ng = 1\n",
            "pkg/low.py": "x = 1\n",
            "pkg/side.py": "from .low import x\n",
        },
    )
    graph = import_graph(tmp_path)
    assert circles(graph) == []
    level = floors(graph)
    assert (level["pkg.low"], level["pkg.side"], level["pkg.mid"], level["pkg.top"]) == (1, 2, 2, 3)
    assert _chain(graph, level) == ["pkg", "pkg.top", "pkg.mid", "pkg.low"]


def test_layers_place_modules_by_their_longest_prefix() -> None:
    names = [n for n, _ in LAYERS]

    def name(module: str) -> str:
        return names[layer_of(f"sagellm_backend.{module}")]

    assert name("api.provider") == "contract and pool" and name("api.blocks") == "contract types"
    assert name("core.provider") == "core" and name("core.validate") == "ground"
    assert name("storage.movers.cuda") == "parts" and name("kv.state") == "contract and pool"
    assert layer_of("sagellm_backend") < layer_of("sagellm_backend.vendors.cuda") < layer_of("sagellm_backend.errors")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("sagellm_backend.nowhere")


def test_the_docs_list_the_layers_of_the_table_in_order() -> None:
    doc = (SRC.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = doc.split("## Floors, top to bottom", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\d+\. \*\*([^*]+)\*\*", section, flags=re.MULTILINE)
    table = list(dict.fromkeys(name for name, _ in LAYERS))
    assert listed == table, f"docs/ARCHITECTURE.md lists {listed}; tests/test_architecture.py LAYERS has {table}"
    assert f"longer than {MAX_FLOORS} floors" in " ".join(section.split())


#: Private members read on objects other than ``self``/``cls`` that stay: torch's own (``t._version``,
#: ``torch._C``) and a pool reading the parts of another pool of its class (``migrate_blocks``, after checking it).
FOREIGN_PRIVATE_ALLOWED = {
    ("kv/pool.py", "target._state"),
    ("attention/paged_plan.py", "t._version"),
    ("storage/movers/cuda.py", "torch._C"),
    ("storage/movers/cuda.py", "torch._C._cuda_getCurrentStream"),
}


#: A named tuple's public methods, underscored only to keep clear of field names.
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})


def private_reads(root: Path) -> list[tuple[str, int, str]]:
    """``(file, line, expression)`` of every ``x._name`` where ``x`` is not ``self``, ``cls``,
    ``super()`` or ``type(...)`` (dunder names and a named tuple's methods excluded)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id in ("super", "type"):
                continue
            if node.attr in NAMEDTUPLE_API:
                continue
            found.append((path.relative_to(root).as_posix(), node.lineno, ast.unparse(node)))
    return found


def test_no_object_reads_another_objects_private_members() -> None:
    bad = [
        f"{f}:{line}: {expr}"
        for f, line, expr in private_reads(SRC / "sagellm_backend")
        if (f, expr) not in FOREIGN_PRIVATE_ALLOWED
    ]
    assert not bad, "private members used across objects (add a narrow public interface): " + "; ".join(bad)


def test_the_private_member_scan_sees_other_objects_only(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "m.py": "class A:\n    def f(self, other):\n        self._x = other._y\n"
            "        super()._z()\n        type(self)._w\n        return cls._v, self.__dict__, o.__class__\n",
        },
    )
    assert private_reads(tmp_path) == [("m.py", 3, "other._y")]
