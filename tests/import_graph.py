"""The project's import graph, read from the source with `ast` (nothing is imported).

    python -m tests.import_graph            layer → layer arrows, then any breach of the rules
    python -m tests.import_graph --dot      the module graph in Graphviz dot, a cluster a layer
    python -m tests.import_graph --dot | dot -Tsvg > imports.svg

Every `import` and `from … import` counts, wherever it stands (module level, inside a
function, under `if TYPE_CHECKING`). tests/test_layers.py checks the rules below on it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "store", "reward", "trainer", "tests", "benchmarks")
SCRIPTS = ("cli",)  # top-level modules

# Lowest first; a module belongs to the layer of the longest prefix that names it. An import
# may point to its own layer or a lower one, never a higher one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("records", ("store.records",)),
    ("store", ("store",)),
    # the text the agent and a model exchange: prompts rendered, outputs parsed into actions,
    # the words (entities, citations) the judge and the evidence check read in them
    ("protocol", ("agent.prompts", "agent.parsing", "agent.words")),
    # what the agent talks to: LLM and search backends, their cassettes and retries, the
    # offline worlds; the file readers and the interrupt flag they and the trainer share
    ("backends", ("agent.llm", "agent.search", "agent.cassette", "agent.retry", "agent.worlds.pocket",
                  "agent.worlds", "agent.inputs", "agent.interrupt")),
    ("agent", ("agent",)),
    ("reward", ("reward",)),
    ("trainer", ("trainer",)),
    ("cli", ("cli",)),
    # Outside the product (the wheel installs neither): tests may import benchmark helpers to
    # test them, benchmarks may build the tests' tiny models.
    ("scripts", ("tests", "benchmarks")),
)
PRODUCT = ("store", "agent", "reward", "trainer", "cli")  # the packages the cycle check covers
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# The agent layer's public interface: the modules reward and trainer may use to build and run
# the agent (grow, evaluate), and the progress display a long run draws on (agent.progress,
# which the improve loop and training take). The rest of the agent layer (agent.console,
# agent.live: the CLI's views) is internal to the agent and the CLI; a new agent module is
# internal until listed here.
AGENT_PUBLIC = ("agent.setup", "agent.graph", "agent.state", "agent.collect", "agent.workers",
                "agent.questions_io", "agent.progress")
RECORDS = "store.records"


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported project module
    names: tuple[str, ...]  # the names a `from … import` takes; () for `import x`
    line: int

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every project module: dotted name → file."""
    out = {name: root / f"{name}.py" for name in SCRIPTS if (root / f"{name}.py").is_file()}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def layer_of(module: str) -> str:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = name, len(p)
    if best is None:
        raise ValueError(f"module {module} is in no layer")
    return best


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def edges_of(module: str, path: Path, known: set[str]) -> list[Edge]:
    """The project modules `module` imports, each import statement once per target."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in known or a.name.split(".")[0] in known:
                    out.append(Edge(module, _known_prefix(a.name, known), (), node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, is_package)
            if base.split(".")[0] not in {m.split(".")[0] for m in known}:
                continue
            taken = []
            for a in node.names:  # `from agent import prompts`: the submodule is the target
                sub = f"{base}.{a.name}"
                if sub in known:
                    out.append(Edge(module, sub, (), node.lineno))
                else:
                    taken.append(a.name)
            if taken:
                out.append(Edge(module, _known_prefix(base, known), tuple(taken), node.lineno))
    return [e for e in out if e.target and e.target != module]


def _known_prefix(name: str, known: set[str]) -> str:
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts)


def graph(root: Path = ROOT) -> list[Edge]:
    mods = modules(root)
    known = set(mods)
    return [e for name, path in mods.items() for e in edges_of(name, path, known)]


def top(module: str) -> str:
    return module.split(".")[0]


def record_names(root: Path = ROOT) -> set[str]:
    """The names store.records defines (classes, functions, constants)."""
    path = root / "store" / "records.py"
    if not path.is_file():
        return set()
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


# --- the rules -------------------------------------------------------------------------


def breaches(edges: list[Edge], root: Path = ROOT) -> list[str]:
    """Every import that breaks a rule of tests/test_layers.py, one line each."""
    out = []
    rec_names = record_names(root)
    for e in edges:
        src, dst = layer_of(e.source), layer_of(e.target)
        if RANK[dst] > RANK[src]:
            out.append(f"{e.where()}: {e.source} ({src}) imports {e.target} ({dst}), a higher layer")
        if src == "records" and e.target != e.source:
            out.append(f"{e.where()}: {RECORDS} imports {e.target}; the records import nothing of the project")
        if src in ("reward", "trainer") and dst == "agent" and e.target not in AGENT_PUBLIC:
            out.append(f"{e.where()}: {e.source} imports {e.target}, not one of the agent's "
                       f"public modules ({', '.join(AGENT_PUBLIC)})")
        private = [n for n in e.names if n.startswith("_") and not n.startswith("__")]
        if private and top(e.source) != top(e.target) and src != "scripts":
            out.append(f"{e.where()}: {e.source} imports {', '.join(private)} from {e.target}: "
                       f"a private name of another package")
        relayed = sorted(set(e.names) & rec_names)
        if relayed and e.target != RECORDS:
            out.append(f"{e.where()}: {e.source} takes {', '.join(relayed)} from {e.target}; "
                       f"records come from {RECORDS}")
    out += [f"import cycle between packages: {' -> '.join(c)}" for c in package_cycles(edges)]
    return out


def package_cycles(edges: list[Edge]) -> list[list[str]]:
    """Cycles in the graph of the product's top-level packages."""
    succ: dict[str, set[str]] = {}
    for e in edges:
        if top(e.source) != top(e.target) and top(e.source) in PRODUCT and top(e.target) in PRODUCT:
            succ.setdefault(top(e.source), set()).add(top(e.target))
    cycles, seen = [], set()
    for start in sorted(succ):
        path = _path_back(start, start, succ)
        if path and frozenset(path) not in seen:
            seen.add(frozenset(path))
            cycles.append(path)
    return cycles


def _path_back(start: str, goal: str, succ: dict[str, set[str]]) -> list[str] | None:
    """A path start → … → goal of at least one arrow (breadth first), or None."""
    frontier, parent = [start], {start: None}
    while frontier:
        nxt = []
        for node in frontier:
            for s in sorted(succ.get(node, ())):
                if s == goal:
                    path = [node]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return path[::-1] + [goal]
                if s not in parent:
                    parent[s] = node
                    nxt.append(s)
        frontier = nxt
    return None


# --- printing --------------------------------------------------------------------------


def to_dot(edges: list[Edge], mods: list[str]) -> str:
    lines = ["digraph imports {", "  rankdir=BT; node [shape=box, fontsize=10];"]
    for name, _ in LAYERS:
        members = [m for m in mods if layer_of(m) == name]
        if members:
            lines.append(f'  subgraph "cluster_{name}" {{ label="{name}";')
            lines += [f'    "{m}";' for m in members]
            lines.append("  }")
    for src, dst in sorted({(e.source, e.target) for e in edges}):
        lines.append(f'  "{src}" -> "{dst}";')
    lines.append("}")
    return "\n".join(lines)


def summary(edges: list[Edge]) -> str:
    arrows = Counter((layer_of(e.source), layer_of(e.target)) for e in edges)
    lines = [f"{s:>10} -> {d:<10} {n:4d}" for (s, d), n in
             sorted(arrows.items(), key=lambda kv: (RANK[kv[0][0]], RANK[kv[0][1]]))]
    found = breaches(edges)
    lines.append(f"{len(found)} breach(es) of the layer rules" + (":" if found else ""))
    return "\n".join(lines + found)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.import_graph", description=__doc__.splitlines()[0])
    p.add_argument("--dot", action="store_true", help="print the module graph in Graphviz dot")
    args = p.parse_args(argv)
    edges = graph()
    print(to_dot(edges, sorted(modules())) if args.dot else summary(edges))
    return 1 if not args.dot and breaches(edges) else 0


if __name__ == "__main__":
    sys.exit(main())
