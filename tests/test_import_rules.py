"""The runtime's modules import one another without a circle, at the top or inside a
function: a circle hidden in a function (as manifest <-> manifest_fields was) works only
as long as nobody moves the import, and leaves no order to read the modules in."""
import ast
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"


def _imports(path: Path) -> set[str]:
    """The runtime modules `path` imports, relatively, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return out


def test_runtime_modules_import_each_other_without_a_circle():
    graph = {p.stem: _imports(p) for p in RUNTIME.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
