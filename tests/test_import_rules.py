"""How the device side is laid out, held by its imports.

`runtime/` is a few rooms (sub-packages) on a few top-level modules. Each room imports
only from the rooms before it in ROOMS, at the top of a file or inside a function: a
circle hidden in a function (as manifest <-> manifest_fields once was) works only as
long as nobody moves the import, and leaves no order to read the code in. Nothing in
`runtime/` imports torch: it runs on devices that have only NumPy, OpenCV and
onnxruntime or TensorRT."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO / "runtime"
# The order to read the device side in: a room may import from itself and the rooms
# before it. "" is the top level (contract, errors, atomic, exits); `entry`, also at the
# top, only starts the commands, so it comes last.
ROOMS = ["", "model", "text", "io", "bundle", "engine", "learn", "serve", "cli", "entry"]
MAX_TOP_MODULES = 8
MAX_ROOM_MODULES = 12
MAX_LINES = 300


def _module_name(path: Path) -> str:
    """`runtime/bundle/load.py` -> "bundle.load"; a package's __init__ is its folder's name."""
    parts = list(path.relative_to(RUNTIME).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The runtime modules `path` imports, anywhere in the file, as dotted names under runtime."""
    name = _module_name(path).split(".")
    package = name if path.name == "__init__.py" else name[:-1]  # what `from .` means in this file
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            names = [base + [a.name] for a in node.names] if not node.module else [base]
            out |= {".".join(n) for n in names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stpr.runtime"):
            out.add(node.module.removeprefix("stpr.runtime").lstrip("."))
    return {name for name in out if name}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in RUNTIME.rglob("*.py")}
    # `from .x import name` names a module or something in one; keep what is a module
    return {m: {i if i in modules else i.rsplit(".", 1)[0] for i in _imports(p)} - {m}
            for m, p in modules.items() if m}


def _room(module: str) -> str:
    if module == "entry":
        return "entry"
    return module.split(".")[0] if "." in module or (RUNTIME / module).is_dir() else ""


def test_runtime_modules_import_each_other_without_a_circle():
    graph = _graph()
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


def test_each_room_imports_only_from_the_rooms_before_it():
    upward = [f"{m} imports {dep}" for m, deps in _graph().items() for dep in sorted(deps)
              if ROOMS.index(_room(dep)) > ROOMS.index(_room(m))]
    assert not upward, "a room imports from one after it in ROOMS:\n" + "\n".join(upward)


def test_every_room_is_in_the_reading_order():
    rooms = {p.name for p in RUNTIME.iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(ROOMS) - {"", "entry"}


def test_the_top_level_and_each_room_hold_few_modules():
    top = sorted(p.stem for p in RUNTIME.glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_MODULES, top
    for room in ROOMS[1:-1]:
        modules = sorted(p.stem for p in (RUNTIME / room).glob("*.py") if p.stem != "__init__")
        assert len(modules) <= MAX_ROOM_MODULES, (room, modules)


def test_no_module_on_either_side_is_longer_than_300_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for folder in ("runtime", "train", "export")
            for p in (REPO / folder).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long


def test_nothing_in_runtime_imports_torch():
    found = []
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert not found, found
