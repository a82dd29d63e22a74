"""Provenance for the workflow: the code each job runs, and what each finished job read and
wrote.

Code: a rule's params carry a hash of every `ract` module its script imports, directly or
through other `ract` modules (`code_files`), so that editing a module reruns exactly the jobs
whose code it is part of.

Lost files:
Snakemake decides what to rerun from the files it is asked for: a finished result whose inputs
have gone missing (a job that failed or was killed after a settings change, which makes
Snakemake delete that job's outputs; a checkpoint or summary deleted by hand) is reported as
up to date, because nothing asks for the missing file. Each job run through the workflow's
adapter therefore leaves a record of its inputs and outputs under `.ract/jobs/` in the working
directory, and the Snakefile asks for every file that a record reachable from the study's
targets lists but that no longer exists: its job runs again, and everything made from it reruns
because its new output is newer.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import json
import os
from pathlib import Path

from .io import write_json

RECORDS = Path(".ract") / "jobs"
LOCKS = Path(".ract") / "locks"
PACKAGE = Path(__file__).resolve().parent


def _module_file(name: str, package: Path, local: Path) -> Path | None:
    """The file of module `name`: in `package` when the name starts with the package's name,
    else a module beside the entry script (a workflow script's `adapter`), or None."""
    parts = name.split(".")
    if parts[0] == package.name:
        base = package.joinpath(*parts[1:])
    elif len(parts) == 1:
        base = local / parts[0]
    else:
        return None
    return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()), None)


def _imports(path: Path, package: Path, local: Path) -> set[Path]:
    """Modules one file imports from the package or beside the entry: every import statement,
    at the top or inside a function, absolute or relative, with the `__init__.py` of each
    package on the way (importing a module runs them)."""
    here = (
        path.relative_to(package.parent).with_suffix("").parts
        if path.is_relative_to(package)
        else ()
    )
    found = set()
    for name in _imported_names(path.read_text(encoding="utf-8"), str(path), here):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = _module_file(".".join(parts[:i]), package, local)
            if f is not None:
                found.add(f)
    return found


@functools.cache
def _imported_names(source: str, filename: str, here: tuple[str, ...]) -> tuple[str, ...]:
    """The modules (and `from` names) the import statements of `source` name, relative ones
    resolved from `here`, the file's module path. Cached by the text itself: the rules of a
    Snakefile hash many scripts whose closures share most modules, and each is parsed once."""
    names = []
    for node in _import_statements(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package holding this file
                base = ".".join([*here[: len(here) - node.level], *filter(None, [node.module])])
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return tuple(names)


def _import_statements(tree: ast.AST):
    """Every import statement in `tree`, at any depth of statements. Expressions are not
    entered: no statement lies inside one (a lambda's body is an expression), and they are
    most of a module's nodes."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, ast.expr))


def code_files(entry: str | os.PathLike, package: str | os.PathLike = PACKAGE) -> list[Path]:
    """The code that `entry` (a workflow script, or a module of `package`) runs: itself, and
    the closure of its imports within `package` and beside it, sorted."""
    package, entry = Path(package).resolve(), Path(entry).resolve()
    seen, todo = set(), [entry]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(_imports(f, package, entry.parent) - seen)
    return sorted(seen)


def code_hash(entry: str | os.PathLike, package: str | os.PathLike = PACKAGE) -> str:
    """A short hash of the source of `code_files(entry)`, each file named by its path in the
    package or its name beside the entry (so a moved checkout hashes the same)."""
    package = Path(package).resolve()
    named = sorted(
        (str(f.relative_to(package.parent) if f.is_relative_to(package) else f.name), f)
        for f in code_files(entry, package)
    )  # in the order of these names, not of the absolute paths, which differ between copies
    h = hashlib.sha256()
    for name, f in named:
        h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _job_name(outputs) -> str:
    """One name per job, from its outputs (paths relative to the working directory)."""
    return hashlib.sha1("\0".join(sorted(map(str, outputs))).encode()).hexdigest()[:20]


def record_job(rule: str, inputs, outputs, root: str | os.PathLike = ".") -> None:
    """Record a finished job (paths relative to the working directory, as Snakemake gives
    them). One file per set of outputs: a rerun of the same job replaces its record."""
    write_json(
        Path(root) / RECORDS / f"{_job_name(outputs)}.json",
        {"rule": rule, "inputs": sorted(map(str, inputs)), "outputs": sorted(map(str, outputs))},
    )


class JobRunning(Exception):
    """Another process holds the job's lock: `pid` (None when it cannot be read)."""

    def __init__(self, pid):
        super().__init__(pid)
        self.pid = pid


@contextlib.contextmanager
def job_lock(outputs, root: str | os.PathLike = "."):
    """Hold a job's lock while it runs, or raise JobRunning. When Snakemake itself is killed,
    its running jobs live on; the next run would start each again beside it, both writing the
    same outputs and resume point. The lock (an flock, released by the kernel however its
    holder ends) makes the second one stop instead."""
    path = Path(root) / LOCKS / f"{_job_name(outputs)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read().strip()
            raise JobRunning(int(text) if text.isdigit() else None) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


def producer(path: str, root: str | os.PathLike = ".") -> str | None:
    """The rule whose finished job wrote `path`, or that wrote every other recorded file in the
    folder `path` names or lies in (a split folder is one rule's), from the records."""
    by_output = _records(Path(root))
    if path in by_output:
        return by_output[path]["rule"]
    folder = path.rstrip("/") if not Path(path).suffix else str(Path(path).parent)
    rules = {r["rule"] for out, r in by_output.items() if str(Path(out).parent) == folder}
    return rules.pop() if len(rules) == 1 else None


def _records(root: Path) -> dict[str, dict]:
    """{output path: record} of every readable record (a torn or foreign file is skipped: the
    records only add reruns, never remove one)."""
    by_output = {}
    for path in sorted((root / RECORDS).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            by_output.update({out: record for out in record["outputs"]})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return by_output


def lost_files(targets, root: str | os.PathLike = ".") -> list[str]:
    """Files that a finished job upstream of `targets` wrote or read, that a recorded job wrote,
    and that are missing now: asking for them reruns their jobs and, through them, every result
    made from them. Jobs that never finished have no record and are Snakemake's to judge."""
    root = Path(root)
    by_output = _records(root)
    lost, seen, todo = [], set(), [str(t) for t in targets]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        record = by_output.get(path)
        if record is None:
            continue
        for other in (*record["outputs"], *record["inputs"]):
            if other in by_output and other not in lost and not (root / other).exists():
                lost.append(other)
        todo.extend(record["inputs"])
    return sorted(lost)
