"""Peak memory and time of an EASE lambda grid against `ease_fit_bytes` (not a test).

    python benchmarks/ease_memory.py                         # the default sizes, this code
    python benchmarks/ease_memory.py --items 4000 --dtype float32
    python benchmarks/ease_memory.py --baseline 7950370      # also the code of that commit
    python benchmarks/ease_memory.py --kernels --items 3000   # the inversion schemes alone
    python benchmarks/ease_memory.py --baseline 7950370 --kernels \\
        --out benchmarks/results/ease_memory.md

Every measurement runs in a fresh process with `OMP_WAIT_POLICY=PASSIVE` and all cores as
torch threads, like the workflow's `fit_ease` job. The process makes synthetic data (binary
rows of about 60 items, half from the user's taste group of items, half by a long-tailed
popularity: `--users-per-item` training users per item, so that X^T X is dense, and
`--val-users` validation users), then resets its peak RSS (/proc/self/clear_refs) and runs
`select_ease_lambda` over `--lambdas`. *Peak* is VmHWM afterwards minus VmRSS before: the
memory of the grid fit itself (the Gram matrix, the fits, the validation scoring, the model
returned) over the data already loaded. *Estimate* is that code's own
`ease_fit_bytes(n_items)`. *s/lambda* is the grid's time after the Gram matrix over the number
of lambdas (validation and any final refit included).

`--kernels` measures the ways to get B from a Gram matrix already built, without validation,
with glibc returning freed blocks as in `select_ease_lambda`: peak over the process holding
the Gram matrix, in n x n matrices of its dtype, and seconds per lambda. The schemes:
`cholesky_solve` (a copy of the Gram matrix, its Cholesky factor, `cholesky_solve` of the
identity: the code of 7950370), `potri_torch` (Cholesky factor and inverse in place in one
work matrix, LAPACK potrf + potri through torch), `potri_scipy` (the same through scipy's
LAPACK, OpenBLAS, and a blockwise mirror of the triangle) and `eigh` (one symmetric
eigendecomposition for all lambdas, then P = V diag(1/(s + lambda)) V^T per lambda, a block of
columns at a time; V replaces the Gram matrix, the setup column is its time).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ract_of, script_parser  # beside this script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ("2000", "4000", "4000:float32", "8000")
LAMBDAS = (50, 100, 200, 500, 1000, 2000, 5000)  # ract.baselines.DEFAULT_LAMBDAS
METHODS = ("cholesky_solve", "potri_torch", "potri_scipy", "eigh")

CHILD_COMMON = """
import gc, json, logging, time
import numpy as np, scipy.sparse as sp, torch
torch.set_num_threads({threads})
from ract import baselines

def status():
    out = {{}}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out

def reset_peak():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    return status()["VmRSS"]

def binary(rng, group, n, per_user):
    # half of each row's items from its user's taste group (a block of items), half by a
    # long-tailed popularity; duplicates merged, every value 1
    p = 1.0 / (np.arange(n) + 10.0) ** 0.7
    block = n // GROUPS
    nnz = len(group) * per_user
    rows = rng.integers(0, len(group), size=nnz)
    cols = np.where(
        rng.random(nnz) < 0.5,
        group[rows] * block + rng.integers(0, block, size=nnz),
        rng.choice(n, size=nnz, p=p / p.sum()),
    )
    m = sp.csr_matrix((np.ones(nnz, np.float32), (rows, cols)), shape=(len(group), n))
    m.data[:] = 1.0
    return m

n, dtype = {n}, {dtype!r}
if dtype == "float32":
    baselines.FLOAT64_MAX_ITEMS = 0
elif dtype == "float64":
    baselines.FLOAT64_MAX_ITEMS = n
GROUPS = 20
rng = np.random.default_rng(0)
train = binary(rng, rng.integers(0, GROUPS, size={users_per_item} * n), n, 60)
lambdas = {lambdas!r}
"""

CHILD_GRID = (
    CHILD_COMMON
    + """
from ract.data.splits import EvalSplit, SplitData
group = rng.integers(0, GROUPS, size={val_users})
fold_in = binary(rng, group, n, 60)
holdout = binary(rng, group, n, 15)
holdout = (holdout - holdout.multiply(fold_in)).tocsr()
holdout.eliminate_zeros()
val = EvalSplit(fold_in, holdout, fold_in)
data = SplitData(None, {{"n_items": n, "content_hash": "0" * 64}}, train, val, val)
gram_dtype = str(baselines.gram_matrix(train[:1]).dtype).replace("torch.", "")

stamps = []
class Stamp(logging.Handler):
    def emit(self, record):
        stamps.append((time.perf_counter(), record.getMessage()))
log = logging.getLogger("ract.baselines")
log.setLevel(logging.INFO)
log.addHandler(Stamp())

base = reset_peak()
start = time.perf_counter()
best, rows = baselines.select_ease_lambda(data, lambdas)
total = time.perf_counter() - start
peak = status()["VmHWM"] - base
gram_s = next(t for t, msg in stamps if "X^T X" in msg) - start
print(json.dumps({{
    "peak": peak, "estimate": baselines.ease_fit_bytes(n), "total_s": total, "gram_s": gram_s,
    "per_lambda_s": (total - gram_s) / len(rows), "lam": best.lam, "dtype": gram_dtype,
    "log": [msg for _, msg in stamps],
}}))
"""
)

CHILD_KERNEL = (
    CHILD_COMMON
    + """
from ract.runtime import return_freed_memory
return_freed_memory()  # as select_ease_lambda does: resident memory follows what is in use
G = baselines.gram_matrix(train)
del train
method = {method!r}
unit = G.numel() * G.element_size()
info = torch.empty((), dtype=torch.int32)

def finish(P):  # B from P = (G + lam I)^-1, in place
    P.div_(P.diagonal().clone().neg_())
    P.diagonal().zero_()

base = reset_peak()
start = time.perf_counter()
setup = 0.0
if method == "cholesky_solve":
    for lam in lambdas:
        A = G.clone()
        A.diagonal().add_(lam)
        L = torch.linalg.cholesky(A)
        A.zero_().diagonal().fill_(1.0)
        B = torch.cholesky_solve(A, L)
        del A, L
        finish(B)
elif method == "potri_torch":
    B = torch.empty_like(G)
    F = B.mT  # column-major view: LAPACK works on it in place
    for lam in lambdas:
        B.copy_(G)
        B.diagonal().add_(lam)
        torch.linalg.cholesky_ex(F, out=(F, info))
        torch.cholesky_inverse(F, out=F)
        finish(B)
elif method == "potri_scipy":
    from scipy.linalg import lapack
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (G.numpy(),))
    B = torch.empty_like(G)
    a = B.numpy().T  # Fortran order: LAPACK overwrites it
    for lam in lambdas:
        B.copy_(G)
        B.diagonal().add_(lam)
        c, err = potrf(a, lower=1, clean=0, overwrite_a=1)
        c, err = potri(c, lower=1, overwrite_c=1)
        assert err == 0 and np.shares_memory(c, a)
        # row-major B holds the upper triangle: mirror it down, a block of rows at a time
        for r in range(0, n, 1024):
            e = min(r + 1024, n)
            B[r:e, :r].copy_(B[:r, r:e].mT)
            D = B[r:e, r:e]
            D.copy_(D.triu() + D.triu(1).mT)
        finish(B)
elif method == "eigh":
    s, V = torch.linalg.eigh(G)
    del G  # V replaces it
    setup = time.perf_counter() - start
    B = torch.empty_like(V)
    for lam in lambdas:
        d = 1.0 / (s + lam)  # P = V diag(d) V^T, a block of columns at a time
        for c in range(0, n, 1024):
            B[:, c:c + 1024] = V @ (d[:, None] * V[c:c + 1024].mT)
        finish(B)
else:
    raise SystemExit(f"unknown method {{method}}")
total = time.perf_counter() - start
peak = status()["VmHWM"] - base
print(json.dumps({{
    "peak": peak, "unit": unit, "setup_s": setup,
    "per_lambda_s": (total - setup) / len(lambdas), "dtype": str(B.dtype).replace("torch.", ""),
}}))
"""
)


def run_child(script: str, pythonpath: str, threads: int) -> dict:
    env = {
        **os.environ,
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": pythonpath,
    }
    with tempfile.TemporaryDirectory() as work:  # where no ract/ shadows PYTHONPATH's
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=work
        )
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_case(text: str, dtype: str) -> tuple[int, str]:
    items, _, kind = text.partition(":")
    kind = kind or dtype
    if not items.isdigit() or int(items) < 2:
        sys.exit(f"setting --items: expected N or N:float32|float64 with N >= 2, got {text!r}")
    if kind not in ("auto", "float32", "float64"):
        sys.exit(f"setting --items: expected float32, float64 or auto after ':', got {kind!r}")
    return int(items), kind


def gb(x: float) -> str:
    return f"{x / 1e9:.3f}"


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--items",
        nargs="+",
        default=list(DEFAULT_CASES),
        help="item counts, each N or N:float32 / N:float64 to force the regime "
        f"(default: {' '.join(DEFAULT_CASES)})",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float64"),
        help="regime of the sizes without one (auto: float64 up to FLOAT64_MAX_ITEMS)",
    )
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS))
    parser.add_argument("--users-per-item", type=int, default=5)
    parser.add_argument("--val-users", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--baseline", help="also measure this commit's code (git revision)")
    parser.add_argument("--no-grid", action="store_true", help="skip the grid fits")
    parser.add_argument("--kernels", action="store_true", help="also time the inversion schemes")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    cases = [parse_case(text, args.dtype) for text in args.items]
    lambdas = tuple(args.lambdas)

    codes = {"this code": str(ROOT)}
    old = ract_of(args.baseline)
    if args.baseline:
        codes = {f"before ({args.baseline})": old.name, **codes}

    load = [os.getloadavg()[0]]
    lines: list[str] = []

    def table(head: str) -> None:
        lines.extend(["", head, "|" + "---|" * head.count("|", 1)])
        print("\n".join(lines[-3:]), flush=True)

    def row(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    if not args.no_grid:
        table(
            "| code | items | dtype | peak GB | estimate GB | peak / estimate | Gram s "
            "| s/lambda | lambda chosen |"
        )
        for n, kind in cases:
            for name, path in codes.items():
                script = CHILD_GRID.format(
                    threads=args.threads,
                    n=n,
                    dtype=kind,
                    users_per_item=args.users_per_item,
                    val_users=args.val_users,
                    lambdas=lambdas,
                )
                r = run_child(script, path, args.threads)
                row(
                    f"| {name} | {n:,} | {r['dtype']} | {gb(r['peak'])} | {gb(r['estimate'])} "
                    f"| {r['peak'] / r['estimate']:.2f} | {r['gram_s']:.1f} "
                    f"| {r['per_lambda_s']:.2f} | {r['lam']:g} |"
                )
    if args.kernels:
        table("| scheme | items | dtype | peak (n x n matrices) | setup s | s/lambda |")
        for n, kind in cases:
            for method in args.methods:
                script = CHILD_KERNEL.format(
                    threads=args.threads,
                    n=n,
                    dtype=kind,
                    users_per_item=args.users_per_item,
                    lambdas=lambdas,
                    method=method,
                )
                r = run_child(script, str(ROOT), args.threads)
                row(
                    f"| {method} | {n:,} | {r['dtype']} | {r['peak'] / r['unit']:.2f} "
                    f"| {r['setup_s']:.1f} | {r['per_lambda_s']:.2f} |"
                )
    load.append(os.getloadavg()[0])
    old.cleanup()

    if args.out:
        import torch

        head = [
            "# EASE fit: peak memory against its estimate",
            "",
            f"`python benchmarks/ease_memory.py {' '.join(sys.argv[1:])}`, "
            f"{time.strftime('%Y-%m-%d %H:%M')}: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}; "
            f"lambdas {', '.join(f'{x:g}' for x in lambdas)}; {args.users_per_item} training "
            f"users per item, {args.val_users} validation users; load average "
            f"{load[0]:.1f} before, {load[1]:.1f} after.",
            "",
            "Peak: the process's VmHWM after `select_ease_lambda` minus its VmRSS before, with "
            "the data loaded, in GB (1e9 bytes). Estimate: that code's `ease_fit_bytes`. "
            "s/lambda: the grid's seconds after the Gram matrix over the number of lambdas, "
            "validation included. Kernels: the inversion alone, peak over the process holding "
            "the Gram matrix in n x n matrices of its dtype. The machine is shared: compare "
            "times within one run.",
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(head + lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
