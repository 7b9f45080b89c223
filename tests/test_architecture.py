"""The rules of ARCHITECTURE.md, checked on the source: one direction of imports (adapters,
plugins and the bench above core; storage below everything else), no database driver
outside core/storage/, the public face for plugins, the bench and the README, and no
import cycles among core's modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "core": "core",
    "adapters": "adapters",
    "plugins": "plugins",
    "personabench": "personabench",
    "dashboard": "dashboard",
}
DRIVERS = {"sqlite3", "aiosqlite", "asyncpg", "psycopg", "psycopg2", "psycopg_pool"}
# what storage may use of core: the pure value and schema modules, and errors
STORAGE_MAY_IMPORT = {"errors", "types", "edits", "schema", "injection", "config", "insights"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["aipersona", *parts])


def modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            out[module_name(path)] = path
    return out


def imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Absolute names of the modules ``path`` imports (``if TYPE_CHECKING`` blocks skipped
    with ``runtime_only``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    skip: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # "from . import x" / "from pkg import sub" may name submodules
            found |= {f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in ALL}
    return found


ALL = modules()


def test_core_imports_nothing_above_it() -> None:
    for name, path in ALL.items():
        if name.startswith("aipersona.core"):
            above = {
                i
                for i in imports(path)
                if i.startswith(
                    (
                        "aipersona.adapters",
                        "aipersona.plugins",
                        "aipersona.personabench",
                        "aipersona.dashboard",
                    )
                )
            }
            assert not above, f"{name} reaches up into {sorted(above)}"


def test_storage_sits_below_everything_else() -> None:
    for name, path in ALL.items():
        if not name.startswith("aipersona.core.storage"):
            continue
        for imported in imports(path, runtime_only=True):
            if imported.startswith("aipersona.core.") and not imported.startswith(
                "aipersona.core.storage"
            ):
                room = imported.split(".")[2]
                assert room in STORAGE_MAY_IMPORT, f"{name} imports {imported}"


def test_no_database_driver_outside_storage() -> None:
    for name, path in ALL.items():
        if name.startswith("aipersona.core.storage"):
            continue
        drivers = {i.split(".")[0] for i in imports(path)} & DRIVERS
        assert not drivers, f"{name} imports {drivers}"
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b", text), (
            f"{name} writes SQL"
        )


# the public API for extending the command line (see ARCHITECTURE.md)
CLI_HELPERS = {"aipersona.core.cli"}


@pytest.mark.parametrize(
    "prefix", ["aipersona.plugins", "aipersona.personabench", "aipersona.dashboard"]
)
def test_plugins_bench_and_dashboard_use_only_the_public_face(prefix: str) -> None:
    for name, path in ALL.items():
        if name.startswith(prefix):
            deep = {i for i in imports(path) if i.startswith("aipersona.core.")} - CLI_HELPERS
            assert not deep, f"{name} imports {sorted(deep)}; use `from aipersona.core import`"


def test_readme_uses_only_the_public_face() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert blocks
    for block in blocks:
        assert not re.search(r"from aipersona\.core\.\w+ import", block), block


def test_core_has_no_import_cycles() -> None:
    core = {n: p for n, p in ALL.items() if n.startswith("aipersona.core")}
    graph = {
        name: {i for i in imports(path, runtime_only=True) if i in core and i != name}
        for name, path in core.items()
    }
    # a package's __init__ re-exporting its submodules is not a cycle of rooms
    for name in graph:
        graph[name] = {i for i in graph[name] if not name.startswith(i + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
