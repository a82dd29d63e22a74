"""Malformed inputs, tried systematically through the command line a user runs: each is refused
with one line naming the file and line (or the setting) and what was expected, exit status 1,
and nothing written; inputs that are odd but meaningful are accepted with a defined outcome.
Property-based tests then check the split invariants and metric ranges on random small tables.
"""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ract.cli import main
from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.splits import load_split
from ract.errors import RactError
from ract.io import write_json
from ract.metrics import ranking_metrics

HEADER = "userId,movieId,rating,timestamp\n"


def good_rows(n_users=30, n_items=12, seed=0):
    """ML-20M `ratings.csv` lines: every user rates 8 of 12 items 4.0 or 5.0."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(1, n_users + 1):
        for i in rng.choice(n_items, 8, replace=False):
            lines.append(f"{u},{i + 1},{rng.choice([4.0, 5.0])},{1_000_000 + u}\n")
    return lines


def prepare(tmp_path, name, content, fmt="ml-csv", *extra):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "split"
    code = main(
        [
            "prepare",
            "--input",
            str(path),
            "--format",
            fmt,
            "--out",
            str(out),
            "--heldout-users",
            "3",
            *map(str, extra),
        ]
    )
    return code, out


def refused(capsys, tmp_path, code, out):
    """The error contract: status 1, one line on stderr, no split folder nor leftovers."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith("ract: error: "), err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    return err[0]


BAD_FILES = {
    "truncated in the middle of a line": (
        HEADER + "".join(good_rows()) + "31,4",
        "ml-csv",
        r"ratings.csv: line 242: expected 4 comma-separated fields, as in the header on line 1, "
        r"found 2",
    ),
    "wrong separator (semicolons)": (
        HEADER.replace(",", ";") + "1;2;4.0;100\n",
        "ml-csv",
        r"ratings.csv: line 1: no user column 'userId' in the header \(columns found: "
        r"userId;movieId;rating;timestamp\)",
    ),
    "tab-separated file read as ml-1m": (
        "1\t2\t4\t100\n",
        "ml-1m",
        r"ratings.csv: line 1: .*'::'",
    ),
    "missing rating column": (
        "userId,movieId,timestamp\n1,2,100\n",
        "ml-csv",
        r"ratings.csv: line 1: no rating column 'rating' in the header",
    ),
    "extra column on one line": (
        "1\t2\t4\t100\n1\t3\t5\t100\t7\n",
        "ml-100k",
        r"ratings.csv: line 2: expected 4 tab-separated fields",
    ),
    "non-numeric rating": (
        HEADER + "1,2,4.0,100\n1,3,good,100\n",
        "ml-csv",
        r"ratings.csv: line 3: rating 'good' is not a number",
    ),
    "NaN rating": (
        HEADER + "1,2,4.0,100\n1,3,nan,100\n",
        "ml-csv",
        r"ratings.csv: line 3: rating 'nan'",
    ),
    "empty rating": (HEADER + "1,2,,100\n", "ml-csv", r"ratings.csv: line 2: .*rating"),
    "empty user id": (HEADER + ",2,4.0,100\n", "ml-csv", r"ratings.csv: line 2: .*user"),
    "empty file": (b"", "ml-csv", r"ratings.csv: .*empty"),
    "header only": (HEADER, "ml-csv", r"ratings.csv: .*no interaction"),
    "non-UTF-8 bytes": (
        HEADER.encode() + b"1,2,4.0,100\n1,\xff\xfe,5.0,100\n",
        "ml-csv",
        r"ratings.csv: line 3: .*UTF-8",
    ),
    "a zip archive instead of the ratings file": (
        b"PK\x03\x04" + b"\0" * 60,
        "ml-csv",
        r"ratings.csv: .*zip",
    ),
    "MSD triplets with a non-integer play count": (
        "u1\ts1\t3\nu1\ts2\tmany\n",
        "msd",
        r"ratings.csv: line 2: .*'many'",
    ),
    "Netflix rating line before any movie header": (
        "1488844,3,2005-09-06\n",
        "netflix",
        r"ratings.csv: line 1: .*movie",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_file_is_refused_in_one_line_with_nothing_written(tmp_path, capsys, case):
    content, fmt, message = BAD_FILES[case]
    code, out = prepare(tmp_path, "ratings.csv", content, fmt)
    line = refused(capsys, tmp_path, code, out)
    assert re.search(message, line), line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--min-user-count", "100"], r"ratings.csv: no interactions left after filtering"),
        (["--rating-threshold", "5"], r"ratings.csv: no interactions left after filtering"),
        (
            ["--heldout-proportion", "1.5"],
            r"setting heldout_proportion: expected a number in \(0, 1\)",
        ),
        (["--min-user-count", "-1"], r"setting min_user_count: expected an integer >= 0"),
        (["--heldout-users", "0.6"], r"heldout_users"),
        (
            ["--min-items-to-split", "100000"],
            r"ratings.csv: the split cannot be evaluated: 0 of 3 "
            r"validation users and 0 of 3 test users have held-out items; "
            r"lower min_items_to_split "
            r"\(--min-items-to-split\)",
        ),
        (
            ["--protocol", "weak", "--weak-ratios", "1", "0", "0"],
            r"0 of 30 validation users and 0 of 30 test users .*weak_ratios \(--weak-ratios\)",
        ),
        (
            ["--protocol", "weak", "--weak-ratios", "0.7", "0.3", "0"],
            r"30 of 30 validation users and 0 of 30 test users",
        ),
    ],
)
def test_impossible_settings_are_refused(tmp_path, capsys, flags, message):
    code, out = prepare(tmp_path, "ratings.csv", HEADER + "".join(good_rows()), "ml-csv", *flags)
    line = refused(capsys, tmp_path, code, out)
    assert re.search(message, line), line


def test_odd_but_meaningful_inputs_are_accepted(tmp_path, capsys):
    # Negative and huge ids are labels, not numbers: kept exactly, no overflow or collision.
    # Duplicate rows are one interaction. Windows line ends and a BOM are read as text.
    rows = good_rows()
    odd = [
        "-5,1,5.0,1\n",
        "-5,2,5.0,1\n",
        "-5,3,5.0,1\n",
        "-5,4,5.0,1\n",
        "-5,5,5.0,1\n",
        "-5,5,5.0,1\n",  # duplicate
        "99999999999999999999999,1,4.5,1\n",
        "99999999999999999999999,2,4.5,1\n",
        "99999999999999999999999,3,4.5,1\n",
        "99999999999999999999999,4,4.5,1\n",
        "99999999999999999999999,6,4.5,1\n",
    ]
    text = "\ufeff" + (HEADER + "".join(rows + odd)).replace("\n", "\r\n")
    code, out = prepare(tmp_path, "ratings.csv", text, "ml-csv")
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_users"] == 32 and manifest["n_rows_read"] == len(rows) + len(odd)
    assert manifest["n_interactions_kept"] == len(rows) + len(odd) - 1
    users = set(pd.read_csv(out / "users.csv", dtype={"user": str})["user"])
    assert {"-5", "99999999999999999999999"} <= users


def strict_json(path):
    """Read JSON as its standard defines it: NaN and Infinity are not JSON numbers."""

    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_json_outputs_write_null_for_undefined_numbers(tmp_path):
    write_json(
        tmp_path / "x.json",
        {"mean": math.nan, "n": 3, "r": 0.5, "se": [math.inf, -math.inf, np.float64("nan")]},
    )
    assert strict_json(tmp_path / "x.json") == {
        "mean": None,
        "n": 3,
        "r": 0.5,
        "se": [None, None, None],
    }


def test_evaluation_of_a_split_on_disk_is_strict_json_or_refused(tmp_path, capsys):
    code, data = prepare(
        tmp_path, "ratings.csv", HEADER + "".join(good_rows()), "ml-csv", "--heldout-users", "1"
    )  # one test user: its standard error is undefined
    assert code == 0
    small = ["--latent-dimension", "4", "--mlp-hidden-size", "8", "--device", "cpu"]
    assert (
        main(
            [
                "train",
                "--stage",
                "actor_pretrain",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "a.pt"),
                "--history",
                str(tmp_path / "a.csv"),
                "--epochs",
                "1",
                *small,
            ]
        )
        == 0
    )
    evaluate = [
        "evaluate",
        "--checkpoint",
        str(tmp_path / "a.pt"),
        "--data",
        str(data),
        "--per-user",
        str(tmp_path / "u.csv"),
        "--summary",
        str(tmp_path / "s.json"),
    ]
    assert main([*evaluate, "--split", "test"]) == 0
    summary = strict_json(tmp_path / "s.json")
    assert summary["n_users_evaluated"] == 1 and summary["metrics"]["ndcg@100"]["se"] is None
    # a split written before `prepare` refused it: no validation user has a held-out item
    holdout = sp.load_npz(data / "validation_holdout.npz")
    sp.save_npz(data / "validation_holdout.npz", sp.csr_matrix(holdout.shape, dtype=np.float32))
    capsys.readouterr()
    for argv in (
        [*evaluate, "--split", "validation"],
        [
            "train",
            "--stage",
            "actor_pretrain",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "b.pt"),
            "--history",
            str(tmp_path / "b.csv"),
            *small,
        ],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        expected = rf"{re.escape(str(data))}: no validation user has a held-out item"
        assert len(err) == 1 and re.search(expected, err[0]), err
    assert not (tmp_path / "b.pt").exists()


# ----------------------------------------------------------------------------------------------
# Properties over random small interaction tables


tables = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 25), st.sampled_from([1, 3, 4, 5])),
    min_size=0,
    max_size=400,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=tables,
    heldout=st.sampled_from([0.1, 0.2, 3]),
    seed=st.integers(0, 2**31 - 1),
    protocol=st.sampled_from(["strong", "weak"]),
)
def test_split_invariants(tmp_path_factory, rows, heldout, seed, protocol):
    frame = pd.DataFrame(rows, columns=["user", "item", "rating"]).astype(
        {"user": str, "item": str}
    )
    out = tmp_path_factory.mktemp("p") / "split"
    cfg = PrepareConfig(heldout_users=heldout, seed=seed, protocol=protocol, min_user_count=2)
    try:
        manifest = prepare_split(frame, cfg, out)
    except RactError as exc:  # refused: one line, nothing written
        assert "\n" not in str(exc) and not out.exists()
        return
    data = load_split(out)
    kept = frame[frame["rating"] > 3.5].drop_duplicates(["user", "item"])
    users = pd.read_csv(out / "users.csv", dtype={"user": str})
    # strong: every kept user lands in exactly one part; weak: in each part once
    assert not users.duplicated(["user", "split"]).any()
    assert not (protocol == "strong" and users["user"].duplicated().any())
    assert set(users["user"]) <= set(kept["user"])
    assert manifest["n_items"] == data.n_items == data.train.shape[1]
    parts = [
        data.train,
        data.validation.input,
        data.validation.holdout,
        data.test.input,
        data.test.holdout,
    ]
    for m in parts:
        assert m.shape[1] == data.n_items and (m.data == 1).all()
    if protocol == "strong":
        assert len(users) == sum(
            m.shape[0] for m in (data.train, data.validation.input, data.test.input)
        )
        # items are those of training users; fold-in and held-out never overlap
        assert (np.asarray(data.train.sum(axis=0)).ravel() > 0).all()
        for es in (data.validation, data.test):
            assert es.input.multiply(es.holdout).nnz == 0
    else:
        for es in (data.validation, data.test):
            assert es.input.shape[0] == data.train.shape[0]
            assert es.holdout.multiply(es.exclude).nnz == 0  # never rank an item already seen


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
    st.sampled_from([1, 5, 20, 100]),
)
def test_metrics_stay_within_zero_and_one(n_users, n_items, seed, k):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_users, n_items, generator=g)
    scores[torch.rand(n_users, n_items, generator=g) < 0.3] = -float("inf")  # excluded items
    if seed % 3 == 0:
        scores = scores.round()  # ties
    relevant = torch.rand(n_users, n_items, generator=g) < 0.4
    per = ranking_metrics(scores, relevant, (k,), ("ndcg", "recall", "precision", "mrr", "hit"))
    for name, values in per.items():
        has = relevant.any(dim=1)
        assert torch.isnan(values[~has]).all(), name  # undefined without a relevant item
        v = values[has]
        assert ((v >= 0) & (v <= 1 + 1e-12)).all(), (name, v)


# ----------------------------------------------------------------------------------------------
# Safe loading


ROOT = Path(__file__).resolve().parents[1]


def test_no_config_value_reaches_a_shell_and_loaders_are_safe():
    rules = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    for path in rules:  # every rule runs a Python script: settings never pass through a shell
        text = path.read_text()
        assert not re.search(r"^\s*(shell|run):", text, re.M), path
        # what Snakemake reads at parse time (the config schema) with a safe loader only
        assert not re.search(r"yaml\.(full_load|unsafe_load)\(", text), path
        for call in calls(text, "yaml.load("):
            loader = call.partition("Loader=")[2]
            assert "SafeLoader" in loader, (path, call)
            assert not re.search(r"\bC?(Full|Unsafe)?Loader\b", loader), (path, call)
    sources = [*ROOT.glob("ract/**/*.py"), *ROOT.glob("workflow/scripts/*.py")]
    for path in sources:
        text = path.read_text()
        assert not re.search(r"yaml\.(load|full_load|unsafe_load)\(", text), path
        assert not re.search(r"\bpickle\b|\bsubprocess\.\w+\([^)]*shell=True", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)


def calls(text: str, opening: str) -> list[str]:
    """Each call in `text` that starts with `opening` (ending in its open parenthesis), up to
    its matching close."""
    found = []
    for match in re.finditer(re.escape(opening), text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        found.append(text[match.start() : end + 1])
    return found


def test_a_config_carrying_a_python_object_is_refused(tmp_path):
    marker = tmp_path / "executed"
    (tmp_path / "evil.yaml").write_text(
        f"seeds: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    snakemake = Path(sys.executable).parent / "snakemake"
    r = subprocess.run(
        [
            str(snakemake),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            "evil.yaml",
            "--cores",
            "1",
            "--dry-run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and not marker.exists()
    assert "Config file is not valid JSON or YAML" in r.stdout + r.stderr  # safe loader
