"""The command line: help texts, a full small run, and one-line errors with exit status 1 (2 for
a malformed command line)."""

import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from ract.cli import main
from ract.data.splits import load_split

from conftest import make_interactions


def cli(*args):
    return main([str(a) for a in args])


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "ract", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("command", ["fetch", "prepare", "train", "evaluate", "recommend"])
def test_every_command_has_help(command):
    r = run(command, "--help")
    assert r.returncode == 0 and "usage: ract" in r.stdout and "--" in r.stdout


def test_train_help_documents_recbole_names_and_stage_defaults():
    out = run("train", "--help").stdout
    for flag in (
        "--latent-dimension",
        "--mlp-hidden-size",
        "--dropout-prob",
        "--anneal-cap",
        "--total-anneal-steps",
        "--critic-layers",
        "--metrics-k",
        "--train-stage",
        "--pretrain-epochs",
        "--save-step",
        "--pre-model-path",
        "--freeze-critic",
        "--dae",
        "--l2-penalty",
    ):
        assert flag in out, flag
    assert "learning_rate=2e-06" in out.replace("\n", " ").replace("  ", " ")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    make_interactions().to_csv(tmp / "ratings.csv", index=False)
    data = tmp / "split"
    assert (
        cli(
            "prepare",
            "--input",
            tmp / "ratings.csv",
            "--format",
            "csv",
            "--columns",
            "user=user,item=item,rating=rating",
            "--out",
            data,
        )
        == 0
    )
    small = [
        "--latent-dimension",
        "8",
        "--mlp-hidden-size",
        "32",
        "--batch-size",
        "64",
        "--device",
        "cpu",
    ]
    assert (
        cli(
            "train",
            "--stage",
            "actor_pretrain",
            "--data",
            data,
            "--out",
            tmp / "a.pt",
            "--history",
            tmp / "a.csv",
            "--epochs",
            "5",
            *small,
        )
        == 0
    )
    assert (
        cli(
            "train",
            "--stage",
            "critic_pretrain",
            "--data",
            data,
            "--out",
            tmp / "c.pt",
            "--history",
            tmp / "c.csv",
            "--pre-model-path",
            tmp / "a.pt",
            "--epochs",
            "2",
            "--min-steps",
            "0",
            "--critic-layers",
            "8",
            "4",
            "--batch-size",
            "64",
        )
        == 0
    )
    assert (
        cli(
            "train",
            "--stage",
            "finetune",
            "--data",
            data,
            "--out",
            tmp / "f.pt",
            "--history",
            tmp / "f.csv",
            "--pre-model-path",
            tmp / "c.pt",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--freeze-critic",
        )
        == 0
    )
    return tmp, data


def test_train_mult_dae_from_the_command_line(cli_run, tmp_path):
    _, data = cli_run
    assert (
        cli(
            "train",
            "--stage",
            "actor_pretrain",
            "--data",
            data,
            "--out",
            tmp_path / "d.pt",
            "--history",
            tmp_path / "d.csv",
            "--epochs",
            "2",
            "--dae",
            "--latent-dimension",
            "16",
            "--l2-penalty",
            "2e-5",
            "--batch-size",
            "64",
        )
        == 0
    )
    from ract.checkpoint import load_checkpoint

    args = load_checkpoint(tmp_path / "d.pt")["actor_args"]
    assert args["variational"] is False and args["mlp_hidden_size"] == []
    assert (pd.read_csv(tmp_path / "d.csv")["kl"].iloc[1:] == 0).all()


def test_evaluate_writes_per_user_and_summary(cli_run):
    tmp, data = cli_run
    assert (
        cli(
            "evaluate",
            "--checkpoint",
            tmp / "f.pt",
            "--data",
            data,
            "--split",
            "test",
            "--per-user",
            tmp / "per_user.csv",
            "--summary",
            tmp / "summary.json",
        )
        == 0
    )
    per_user = pd.read_csv(tmp / "per_user.csv")
    summary = json.loads((tmp / "summary.json").read_text())
    n_test = pd.read_csv(data / "users.csv").query("split == 'test'").shape[0]
    assert len(per_user) == n_test
    for metric in ("ndcg", "recall", "recall_recbole", "mrr", "hit", "precision"):
        for k in (20, 50, 100):
            key = f"{metric}@{k}"
            assert key in per_user.columns
            assert summary["metrics"][key]["mean"] == pytest.approx(per_user[key].mean())
            assert 0 <= summary["metrics"][key]["mean"] <= 1
    assert summary["n_users_evaluated"] + summary["n_users_without_holdout"] == n_test


def test_recommend_gives_unseen_original_ids(cli_run, capsys):
    tmp, data = cli_run
    users = pd.read_csv(data / "users.csv")
    train_user = users.query("split == 'train'")["user"].iloc[0]
    test_user = users.query("split == 'test'")["user"].iloc[0]
    assert (
        cli(
            "recommend",
            "--checkpoint",
            tmp / "f.pt",
            "--data",
            data,
            "--users",
            test_user,
            train_user,
            "-n",
            "5",
            "--out",
            tmp / "recs.csv",
        )
        == 0
    )
    recs = pd.read_csv(tmp / "recs.csv")
    assert recs["user"].tolist() == [test_user] * 5 + [train_user] * 5  # in the order asked
    assert recs.groupby("user")["rank"].apply(list).tolist() == [[1, 2, 3, 4, 5]] * 2
    seen = make_interactions()
    seen = seen[(seen["rating"] > 3.5) & (seen["user"] == train_user)]["item"]
    assert not set(recs.query("user == @train_user")["item"]) & set(seen)
    assert set(recs["item"]) <= set(pd.read_csv(data / "items.csv")["item"])
    assert (recs.groupby("user")["score"].diff().dropna() <= 0).all()


def test_version():
    from ract import __version__

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"ract {__version__}"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["watch", "--help"]])
def test_version_help_and_watch_load_neither_torch_nor_pandas(args):
    # only the command asked for builds its arguments; the others' import torch and pandas
    code = (
        "import sys\nfrom ract.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\nprint(sorted({'torch', 'pandas'} & set(sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "[]", r.stdout + r.stderr


def test_recommend_for_a_new_user_folds_in_their_items(cli_run, tmp_path):
    """A user not in the data, given by items: the same top-n as a held-out user with those
    items as fold-in; unknown item ids are named and skipped; JSON on request."""
    tmp, data = cli_run
    user = pd.read_csv(data / "users.csv").query("split == 'test'").iloc[0]
    split = load_split(data)
    items = pd.read_csv(data / "items.csv")["item"].to_numpy()
    fold_in = items[split.test.input[int(user["index"])].indices].tolist()
    (tmp_path / "items.txt").write_text("\n".join(map(str, [*fold_in, "no-such-item"])))
    r = run(
        "recommend",
        "--checkpoint",
        tmp / "f.pt",
        "--data",
        data,
        "--items-file",
        tmp_path / "items.txt",
        "-n",
        "5",
        "--format",
        "json",
    )
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)
    assert [x["rank"] for x in recs] == [1, 2, 3, 4, 5] and set(recs[0]) == {
        "rank",
        "item",
        "score",
    }
    assert "1 of " in r.stderr and "no-such-item" in r.stderr
    known = run(
        "recommend",
        "--checkpoint",
        tmp / "f.pt",
        "--data",
        data,
        "--users",
        user["user"],
        "-n",
        "5",
    )
    expected = pd.read_csv(io.StringIO(known.stdout))
    assert [int(x["item"]) for x in recs] == expected["item"].tolist()
    assert not {int(x["item"]) for x in recs} & set(fold_in)
    r = run(
        "recommend",
        "--checkpoint",
        tmp / "f.pt",
        "--data",
        data,
        "--items",
        *map(str, fold_in),
        "-n",
        "5",
    )  # the same from the command line, as CSV
    assert pd.read_csv(io.StringIO(r.stdout))["item"].tolist() == expected["item"].tolist()


@pytest.mark.parametrize(
    "args,message",
    [
        (["prepare", "--input", "nope.csv", "--format", "csv", "--out", "x"], "nope.csv"),
        (
            [
                "train",
                "--stage",
                "actor_pretrain",
                "--data",
                "missing",
                "--out",
                "a.pt",
                "--history",
                "a.csv",
            ],
            "manifest.json: file not found",
        ),
        (
            [
                "train",
                "--stage",
                "actor_pretrain",
                "--data",
                "SPLIT",
                "--out",
                "a.pt",
                "--history",
                "a.csv",
                "--epochs",
                "-1",
            ],
            "setting epochs",
        ),
        (
            [
                "train",
                "--stage",
                "actor_pretrain",
                "--data",
                "SPLIT",
                "--out",
                "a.pt",
                "--history",
                "a.csv",
                "--dropout-prob",
                "1.5",
            ],
            "setting dropout_prob",
        ),
        (
            [
                "evaluate",
                "--checkpoint",
                "none.pt",
                "--data",
                "SPLIT",
                "--per-user",
                "p.csv",
                "--summary",
                "s.json",
                "--ks",
                "0",
            ],
            "none.pt: checkpoint file not found",
        ),
        (
            ["recommend", "--checkpoint", "CKPT", "--data", "SPLIT", "--users", "no-such-user"],
            "no-such-user",
        ),
        (
            [
                "recommend",
                "--checkpoint",
                "CKPT",
                "--data",
                "SPLIT",
                "--users",
                "1000",
                "--out",
                ".",
            ],
            "is a folder; expected the name of a file to write",
        ),
        (
            ["recommend", "--checkpoint", "CKPT", "--data", "SPLIT", "--items", "x1", "x2"],
            "none of the 2 items given is in",
        ),
        (
            [
                "recommend",
                "--checkpoint",
                "CKPT",
                "--data",
                "SPLIT",
                "--users",
                "1000",
                "--items",
                "501",
            ],
            "one of the two",
        ),
    ],
)
def test_bad_input_gives_one_error_line(cli_run, tmp_path, args, message):
    tmp, data = cli_run
    args = [str(data) if a == "SPLIT" else str(tmp / "f.pt") if a == "CKPT" else a for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "ract", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("ract: error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_evaluate_rejects_k_below_one(cli_run, tmp_path):
    tmp, data = cli_run
    r = run(
        "evaluate",
        "--checkpoint",
        tmp / "f.pt",
        "--data",
        data,
        "--per-user",
        tmp_path / "p.csv",
        "--summary",
        tmp_path / "s.json",
        "--ks",
        "0",
    )
    assert r.returncode == 1 and "setting ks" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("threads", ["-1", "0", "two"])
def test_threads_below_one_is_a_usage_error(threads):
    r = run(
        "train",
        "--stage",
        "actor_pretrain",
        "--data",
        "d",
        "--out",
        "a.pt",
        "--history",
        "a.csv",
        "--threads",
        threads,
    )
    assert r.returncode == 2  # argparse's status for a malformed command line
    assert r.stderr.splitlines()[-1] == (
        "ract train: error: argument --threads: expected a "
        f"whole number of at least 1, got {threads}"
    )
