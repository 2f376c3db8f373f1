"""The package's import graph, read with ``ast`` (imports inside functions included): no import cycle, and every
import points down the layers, from the commands to the foundation:

    cli -> jobs -> metrics -> sampling -> data -> models -> (errors, files, searchpath, rules, config)

A module may import its own layer (without a cycle) and any layer below it, never one above. ``tstitch`` itself
(the public API: ``load``, ``sample``, ``pipeline``) sits on top; nothing in the package imports it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tstitch"
LAYERS = ["errors", "files", "searchpath", "rules", "config", "models", "data", "sampling", "metrics", "jobs", "cli"]
RANK = {**dict.fromkeys(LAYERS[:5], 0), **{name: i for i, name in enumerate(LAYERS[5:], 1)},
        "": len(LAYERS) - 4}  # "": the package's __init__ (the public API), above cli


def modules(root):
    """``{dotted name: path}`` of every module of the package at ``root`` (a package's ``__init__`` by its own name)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name, path, known):
    """The package's modules that module ``name`` imports anywhere in its source (a function's body included):
    ``from a.b import c`` is module ``a.b.c`` where that is a module, else ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                base = ".".join(filter(None, [*package.split(".")[:len(package.split(".")) - node.level + 1], base]))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in known and m != name}


def graph(root=ROOT):
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(g):
    """The strongly connected components of ``g`` with more than one module (Tarjan), each sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(found)


def layer(name):
    """The layer of a module: the first name under the package (``tstitch.models.zoo`` -> models)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward(g):
    """``(importer, imported)`` pairs where a module imports one of a higher layer."""
    return sorted((m, d) for m, ds in g.items() for d in ds if RANK[layer(d)] > RANK[layer(m)])


def test_every_module_has_a_layer():
    assert sorted({layer(m) for m in graph()} - {""}) == sorted(LAYERS)


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_imports_point_down_the_layers():
    assert upward(graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path):
    """The checks themselves: a cycle through an import inside a function, and an import from a higher layer, in a
    package made here."""
    pkg = tmp_path / "tstitch"
    for folder in ("models", "cli"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("class ConfigError(ValueError):\n    pass\n")
    (pkg / "models" / "zoo.py").write_text("from tstitch.errors import ConfigError\n\n\ndef load():\n"
                                           "    from tstitch.cli import schema\n")
    (pkg / "cli" / "schema.py").write_text("from tstitch.models import zoo\n")
    g = graph(pkg)
    assert g["tstitch.models.zoo"] == {"tstitch.errors", "tstitch.cli.schema"}
    assert cycles(g) == [["tstitch.cli.schema", "tstitch.models.zoo"]]
    assert upward(g) == [("tstitch.models.zoo", "tstitch.cli.schema")]
    (pkg / "models" / "zoo.py").write_text("from . import checks\nfrom ..errors import ConfigError\n")
    (pkg / "models" / "checks.py").write_text("")
    assert graph(pkg)["tstitch.models.zoo"] == {"tstitch.models.checks", "tstitch.errors"}
    assert cycles(graph(pkg)) == [] and upward(graph(pkg)) == []
