#!/usr/bin/env python3
"""Lists the import circles between the modules of each crate.

A module `a` depends on a module `b` when its file (its code before its
first `#[cfg(test)]`, comments left out; test-only files left out) names
`b` through a path:
`crate::b::…`, `super::b::…` or `self::b::…` in a `use` or in code. Paths
are resolved to files (`a/mod.rs`, `a.rs`, `a/b.rs`), and an edge is kept
between the two modules that are children of the same parent: `cluster::leader`
naming `cluster::member` is an edge leader → member inside `cluster`; naming
`crate::store::x` from `cluster::leader` is an edge cluster → store at the
crate's top. A circle is a strongly connected set of two or more siblings.

Usage: scripts/module-cycles.py [crates-dir]; exit code 1 if any circle.
`--self-test` checks the check on a made-up crate.
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)::\{([^}]*)\}")


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def production_text(file: Path) -> str:
    """The file's code before its tests, comments left out."""
    text = file.read_text()
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return "\n".join(line.split("//")[0] for line in text.split("\n"))


def resolve(modules: set, base: tuple, segments: list) -> tuple:
    """The longest module prefix of base + segments that is a module."""
    path = base + tuple(segments)
    while path and path not in modules:
        path = path[:-1]
    return path


def references(text: str, module: tuple, is_dir_module: bool):
    # `super` of a file module `a/b.rs` (module a::b) is `a`; of `a/b/mod.rs`
    # (module a::b) also `a`.
    parent = module[:-1]
    for match in PATH.finditer(text):
        root, rest = match.group(1), match.group(2).split("::")[1:]
        yield root, rest
    for match in GROUP.finditer(text):
        root = match.group(1)
        for item in match.group(2).split(","):
            first = item.strip().split("::")
            if first and re.fullmatch(r"[a-z_][a-z0-9_]*", first[0]):
                yield root, first


def cycles(src: Path) -> list:
    files = [
        f
        for f in src.rglob("*.rs")
        if not f.name.startswith("tests") and not f.name.endswith("_tests.rs")
        and "tests" not in f.relative_to(src).parts[:-1]
    ]
    modules = {module_of(src, f) for f in files}
    edges = {}
    for file in files:
        module = module_of(src, file)
        text = production_text(file)
        for root, rest in references(text, module, file.name == "mod.rs"):
            base = {"crate": (), "super": module[:-1], "self": module}[root]
            target = resolve(modules, base, rest)
            if not target or target == module:
                continue
            # The siblings under the common parent.
            common = 0
            while common < min(len(module), len(target)) and module[common] == target[common]:
                common += 1
            if common >= len(module) or common >= len(target):
                continue  # an ancestor or a descendant
            a, b = module[: common + 1], target[: common + 1]
            edges.setdefault(a, set()).add(b)
    # Tarjan's strongly connected components.
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted("::".join(part) for part in component))

    sys.setrecursionlimit(10000)
    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def self_test() -> None:
    """The check finds a circle between siblings and spares a parent and
    its children, code in tests and comments."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        src = Path(directory) / "demo" / "src"
        (src / "unit").mkdir(parents=True)
        (src / "lib.rs").write_text("mod a;\nmod b;\nmod unit;\n")
        (src / "a.rs").write_text("use crate::b::B;\n")
        (src / "b.rs").write_text("// crate::a::A\npub fn f() { super::a::g() }\n")
        (src / "unit" / "mod.rs").write_text("mod walk;\nuse walk::W;\n")
        (src / "unit" / "walk.rs").write_text("use super::Unit;\n#[cfg(test)]\nuse crate::a::A;\n")
        found = cycles(src)
        assert found == [["a", "b"]], found


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        print("self-test passed")
        return 0
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent / "crates")
    total = 0
    for src in sorted(root.glob("*/src")):
        for component in cycles(src):
            total += 1
            print(f"{src.parent.name}: {' ↔ '.join(component)}")
    print(f"{total} import circles")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
