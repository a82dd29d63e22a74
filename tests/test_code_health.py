"""Every function in `ract/` stays short enough to read at once and takes few parameters.

A function counts from its `def` line to its last line, docstring included; parameters leave
out self and cls. An exception goes in ALLOWED with the reason, and only for the limit it
needs.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ract"
MAX_LINES = 50
MAX_PARAMETERS = 6

# (file relative to ract/, function name) -> {"lines" or "parameters": (allowed, reason)}
ALLOWED = {
    ("train.py", "train_stage"): {
        "parameters": (
            11,
            "the documented Python API (README 'Use from Python'): one keyword per file and "
            "setting a notebook passes, each with the same name as on the command line",
        ),
    },
}


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = node.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    return [n for n in names if n not in ("self", "cls")]


def measure() -> dict[tuple[str, str, int], dict[str, int]]:
    """(file, function, line) -> its lines and parameters, for every function in ract/."""
    sizes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = (path.relative_to(PACKAGE).as_posix(), node.name, node.lineno)
                sizes[key] = {
                    "lines": node.end_lineno - node.lineno + 1,
                    "parameters": len(_parameters(node)),
                }
    return sizes


def test_no_function_in_ract_is_too_long_or_takes_too_many_parameters():
    limits = {"lines": MAX_LINES, "parameters": MAX_PARAMETERS}
    over = []
    for (file, name, line), size in measure().items():
        allowed = ALLOWED.get((file, name), {})
        for what, limit in limits.items():
            limit = allowed.get(what, (limit, ""))[0]
            if size[what] > limit:
                over.append(f"ract/{file}:{line} {name}: {size[what]} {what} (limit {limit})")
    assert not over, "split these, or list them in ALLOWED with a reason:\n" + "\n".join(over)


def test_every_allowed_exception_is_still_needed():
    sizes = {(file, name): size for (file, name, _), size in measure().items()}
    stale = [
        f"{file} {name} {what}"
        for (file, name), allowed in ALLOWED.items()
        for what in allowed
        if (file, name) not in sizes
        or sizes[(file, name)][what] <= (MAX_LINES if what == "lines" else MAX_PARAMETERS)
    ]
    assert not stale, f"ALLOWED entries no longer needed: {stale}"
