"""ARCHITECTURE.md's layer rules, read from the imports: which part of mpexport may import which.

Every module under ``mpexport/`` is parsed (not imported) and each of its
imports of ``mpexport`` is mapped to a layer. Every import counts, wherever
it is: one inside a function runs when the function does, and one under
``TYPE_CHECKING`` is a dependency all the same (mypy follows it, and the
module's meaning depends on it). A new module must be placed in a layer
below, so the rules never silently stop covering it. And no module imports
another's private (``_underscored``) names: what two modules share is public.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mpexport"

# The layers, bottom up; a module's name is relative to ``mpexport`` ("" is
# its ``__init__``), and ``name.*`` is a folder with everything in it.
LAYERS: dict[str, tuple[str, ...]] = {
    # Values, errors and small tools everything shares; they import only each other.
    "foundation": ("errors", "atomic", "filelock", "dates", "model", "events", "interrupt",
                   "options", "spool", "loopback", "version", "environment"),
    "mixpanel": ("mixpanel.*",),  # the API: HTTP, verifying bodies
    "pacing": ("pacing.*",),  # the rate limits
    "config": ("config.*",),  # credentials from the config file and the environment
    "sinks": ("sinks", "sinks.base", "sinks.ndjson", "sinks.output_file"),  # NDJSON
    "sinks.duckdb": ("sinks.duckdb.*",),  # the loader
    "sinks.lake": ("sinks.lake.*",),  # Parquet days, stores, the lake: built on the loader
    "sql": ("sql.*",),  # mpexport sql: reads what the loader and the lake wrote
    "workers": ("workers",),  # the one worker pool, for events and profiles
    "startup": ("startup",),  # how every run starts, events or profiles
    "run": ("request", "plan", "syncing", "database", "pipeline", "runner"),  # one run
    "profiles": ("profile_export.*",),  # one profiles run
    "verify": ("verify.*",),  # a check against Mixpanel's counts, and the refetch of what differs
    "front": ("", "api"),  # the library's public face
    "cli": ("cli.*", "__main__"),
    # Mixpanel's stand-in shares no code with the client it tests.
    "fakeserver": ("fakeserver.*",),
}

# Which other layers each layer may import (its own modules always).
ALLOWED: dict[str, frozenset[str]] = {
    "foundation": frozenset(),
    "mixpanel": frozenset({"foundation"}),
    "pacing": frozenset({"foundation"}),
    "config": frozenset({"foundation", "mixpanel"}),
    "sinks": frozenset({"foundation"}),
    "sinks.duckdb": frozenset({"foundation"}),
    "sinks.lake": frozenset({"foundation", "sinks.duckdb"}),
    "sql": frozenset({"foundation", "sinks.duckdb", "sinks.lake"}),
    "workers": frozenset({"foundation", "mixpanel"}),
    "startup": frozenset({"foundation", "mixpanel", "pacing", "config", "sinks.duckdb"}),
    "run": frozenset({"foundation", "mixpanel", "pacing", "config", "workers", "startup",
                      "sinks", "sinks.duckdb", "sinks.lake"}),
    "profiles": frozenset({"foundation", "mixpanel", "pacing", "config", "workers", "startup",
                           "sinks.duckdb"}),
    "verify": frozenset({"foundation", "mixpanel", "pacing", "config", "workers", "startup",
                         "sinks.duckdb", "sinks.lake", "sql", "run"}),
    "front": frozenset({"foundation", "mixpanel", "startup", "run", "profiles"}),
    "cli": frozenset({"foundation", "mixpanel", "config", "sql", "startup", "run", "profiles",
                      "verify", "front", "fakeserver"}),
    "fakeserver": frozenset(),
}


@dataclass(frozen=True)
class Import:
    """One import of a module of the package: who, where, what."""

    module: str  # relative to mpexport, "" for its __init__
    line: int
    target: str
    private: tuple[str, ...] = ()  # the _names it takes from another module

    def __str__(self) -> str:
        return f"{dotted(self.module)}:{self.line} imports {dotted(self.target)}"


def dotted(name: str) -> str:
    """The full name of a module named relative to the package."""
    return f"mpexport.{name}" if name else "mpexport"


def read_package(root: Path = PACKAGE) -> dict[str, str]:
    """Every module's source by its name relative to ``root`` ("" for the ``__init__``)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        sources[".".join(parts)] = path.read_text(encoding="utf-8")
    return sources


def _known(name: str, modules: Mapping[str, str]) -> str | None:
    """The module ``name`` (relative) is, or the nearest package holding it."""
    while name not in modules:
        if not name:
            return None
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str, source: str, modules: Mapping[str, str]) -> Iterator[Import]:
    """The imports of ``mpexport`` modules in ``source``, anywhere in it."""
    is_package = any(other.startswith(f"{module}.") for other in modules) or module == ""
    for node in ast.walk(ast.parse(source)):
        private: tuple[str, ...] = ()
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: from the module's package (itself, for an __init__).
                base = module.split(".") if module else []
                keep = len(base) - node.level + (1 if is_package else 0)
                parent = ["mpexport", *base[:keep]]
            else:
                parent = []
            origin = ".".join(parent + ([node.module] if node.module else []))
            # ``from pkg import mod`` imports the module pkg.mod.
            names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}".removeprefix(
                "mpexport.") in modules else origin for alias in node.names]
            private = tuple(alias.name for alias in node.names
                            if alias.name.startswith("_") and not alias.name.startswith("__"))
        else:
            continue
        for name in names:
            if name != "mpexport" and not name.startswith("mpexport."):
                continue
            target = _known(name.removeprefix("mpexport").removeprefix("."), modules)
            if target is not None:
                yield Import(module, node.lineno, target, private if target != module else ())


def layer_of(module: str) -> list[str]:
    """The layers whose patterns hold ``module`` (exactly one, when the table is right)."""
    found = []
    for layer, patterns in LAYERS.items():
        for pattern in patterns:
            folder = pattern.removesuffix(".*")
            if module == pattern or (pattern.endswith(".*") and (
                    module == folder or module.startswith(f"{folder}."))):
                found.append(layer)
                break
    return found


def cycle_in(edges: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` as a path (first node repeated), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for after in sorted(edges.get(node, ())):
            if state.get(after) == 1:
                return [*path[path.index(after):], after]
            if after not in state and (found := visit(after)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def problems(modules: Mapping[str, str]) -> list[str]:
    """Every broken rule of ``modules`` (name → source), one line each."""
    found = []
    unplaced = [name for name in modules if len(layer_of(name)) != 1]
    for name in unplaced:
        found.append(f"{dotted(name)} is in {layer_of(name) or 'no layer'}: "
                     "place it in exactly one layer of tests/test_layers.py")
    between: dict[str, set[str]] = {}
    for name, source in sorted(modules.items()):
        if name in unplaced:
            continue
        (layer,) = layer_of(name)
        for imp in imports_of(name, source, modules):
            if imp.private:
                found.append(f"{imp}: private {', '.join(imp.private)}")
            if imp.target in unplaced:
                continue
            (target,) = layer_of(imp.target)
            if target == layer:
                continue
            between.setdefault(layer, set()).add(target)
            if target not in ALLOWED[layer]:
                found.append(f"{imp}: {layer} may not import {target}")
    cycle = cycle_in(between)
    if cycle:
        found.append(f"a cycle between layers: {' -> '.join(cycle)}")
    return found


# ------------------------------------------------------------------ the rules


def test_the_table_names_each_layer_once_and_allows_no_cycle() -> None:
    assert set(ALLOWED) == set(LAYERS)
    assert all(allowed <= set(LAYERS) for allowed in ALLOWED.values())
    assert cycle_in({layer: set(allowed) for layer, allowed in ALLOWED.items()}) is None


def test_the_imports_follow_the_layers() -> None:
    modules = read_package()
    assert "sinks.lake.sink" in modules and "" in modules  # the package was found
    assert problems(modules) == []


def test_architecture_md_states_the_same_rules() -> None:
    """The table in ARCHITECTURE.md is this one: the rules people read are the ones checked."""
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    stated = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in LAYERS:
            allowed = cells[2]
            none = allowed in ("nothing", "each other only")
            stated[cells[0]] = frozenset() if none else frozenset(allowed.split(", "))
    assert stated == ALLOWED


# ------------------------------------------------- the check itself, on made-up modules


CLEAN = {
    "": "",
    "errors": "",
    "model": "from mpexport.errors import UsageError\n",
    "sinks": "",
    "sinks.ndjson": "from mpexport import model\n",
    "sinks.duckdb": "",
    "sinks.duckdb.sink": "from mpexport.model import Chunk\n",
    "sinks.lake": "",
    "sinks.lake.sink": "from ..duckdb.sink import DuckDBSink\nfrom . import store\n",
    "sinks.lake.store": "import mpexport.errors\n",
    "cli": "",
    "cli.main": "from mpexport import __version__\n",
}


def with_module(name: str, source: str) -> dict[str, str]:
    return {**CLEAN, name: source}


def test_made_up_clean_modules_pass() -> None:
    assert problems(CLEAN) == []
    # Relative imports resolve from the module's package.
    found = {imp.target for imp in imports_of("sinks.lake.sink", CLEAN["sinks.lake.sink"], CLEAN)}
    assert found == {"sinks.duckdb.sink", "sinks.lake.store"}


@pytest.mark.parametrize("source", [
    "from mpexport.cli.main import run\n",
    "import mpexport.cli.main\n",
    "def late():\n    from mpexport.cli import main\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli.main import x\n",
])
def test_an_upward_import_fails_wherever_it_is(source: str) -> None:
    (found,) = problems(with_module("sinks.ndjson", source))
    assert found.startswith("mpexport.sinks.ndjson:")
    assert found.endswith(" imports mpexport.cli.main: sinks may not import cli")


def test_a_cycle_between_packages_fails() -> None:
    modules = with_module("sinks.duckdb.sink", "from mpexport.sinks.lake.store import Store\n")
    found = problems(modules)
    assert "sinks.duckdb may not import sinks.lake" in found[0]
    assert found[-1] == ("a cycle between layers: "
                         "sinks.duckdb -> sinks.lake -> sinks.duckdb")


def test_a_private_name_from_another_module_fails() -> None:
    modules = with_module("sinks.lake.sink", "from mpexport.sinks.duckdb.sink import _open\n")
    assert problems(modules) == ["mpexport.sinks.lake.sink:1 imports "
                                 "mpexport.sinks.duckdb.sink: private _open"]


def test_a_module_outside_every_layer_fails() -> None:
    found = problems(with_module("reports", "from mpexport import errors\n"))
    assert found == ["mpexport.reports is in no layer: "
                     "place it in exactly one layer of tests/test_layers.py"]
