"""Paths a command is given: it never overwrites or deletes a file it did not write, refuses
options that name the same path, and a killed `ract prepare` leaves nothing behind for long."""

import os
import subprocess
import sys
import textwrap

import pytest

from ract.cli import COMMANDS, PATH_OPTIONS, main
from ract.data.prepare import temporary_folder

from conftest import make_interactions

TINY = [
    "--latent-dimension",
    "8",
    "--mlp-hidden-size",
    "16",
    "--batch-size",
    "64",
    "--device",
    "cpu",
]


def refused(capsys, *args) -> str:
    """Run `ract args` in this process; assert it ends with one error line, return that line."""
    code = main([str(a) for a in args])
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("ract: error:")]
    assert code == 1 and len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A split folder, its raw ratings and an actor checkpoint, which no test may change."""
    tmp = tmp_path_factory.mktemp("paths")
    make_interactions().rename(columns={"user": "userId", "item": "movieId"}).to_csv(
        tmp / "ratings.csv", index=False
    )
    assert (
        main(
            [
                "prepare",
                "--input",
                str(tmp / "ratings.csv"),
                "--format",
                "ml-csv",
                "--heldout-users",
                "0.15",
                "--out",
                str(tmp / "split"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--stage",
                "actor_pretrain",
                "--data",
                str(tmp / "split"),
                "--out",
                str(tmp / "actor.pt"),
                "--history",
                str(tmp / "actor.csv"),
                "--epochs",
                "1",
                *TINY,
            ]
        )
        == 0
    )
    (tmp / "notes.txt").write_text("my notes\n")
    (tmp / "folder").mkdir()
    (tmp / "folder" / "notes.txt").write_text("more notes\n")
    return tmp


def snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def expand(args, files, out):
    """Fill in the FILES, OUT and LINK (a symlink to FILES/actor.pt) of a parameter's args."""
    (out.parent / "LINK").symlink_to(files / "actor.pt")
    return [
        str(a)
        .replace("FILES", str(files))
        .replace("OUT", str(out))
        .replace("LINK", str(out.parent / "LINK"))
        for a in args
    ]


TRAIN = ["train", "--stage", "actor_pretrain", "--data", "FILES/split", "--epochs", "2", *TINY]


@pytest.mark.parametrize("name", ["actor.pt", "notes.txt", "folder"])
def test_resume_refuses_a_path_holding_anything_but_a_resume_point(files, tmp_path, capsys, name):
    before = snapshot(files)
    args = expand(
        [*TRAIN, "--out", "OUT/a.pt", "--history", "OUT/a.csv", "--resume", f"FILES/{name}"],
        files,
        tmp_path / "out",
    )
    line = refused(capsys, *args)
    assert str(files / name) in line and "resume point" in line
    assert snapshot(files) == before  # the checkpoint and the notes are kept
    assert not (tmp_path / "out").exists()  # and no training ran


@pytest.mark.parametrize(
    "args,flags",
    [
        ([*TRAIN, "--out", "OUT/a.pt", "--history", "OUT/a.pt"], ("--out", "--history")),
        (
            [*TRAIN, "--out", "OUT/a.pt", "--history", "OUT/a.csv", "--resume", "OUT/./a.pt"],
            ("--out", "--resume"),
        ),
        (
            [*TRAIN, "--out", "OUT/a.pt", "--history", "OUT/a.csv", "--resume", "OUT/a.csv"],
            ("--history", "--resume"),
        ),
        (
            [
                *TRAIN,
                "--out",
                "OUT/a.pt",
                "--history",
                "OUT/a.csv",
                "--resume",
                "LINK",
                "--pre-model-path",
                "FILES/actor.pt",
            ],
            ("--resume", "--pre-model-path"),
        ),
        (
            [
                *TRAIN,
                "--out",
                "FILES/actor.pt",
                "--history",
                "OUT/a.csv",
                "--pre-model-path",
                "FILES/actor.pt",
            ],
            ("--out", "--pre-model-path"),
        ),
        (
            [*TRAIN, "--out", "OUT/a.pt", "--history", "FILES/split", "--checkpoint-dir", "OUT/c"],
            ("--history", "--data"),
        ),
        (
            [
                "evaluate",
                "--checkpoint",
                "FILES/actor.pt",
                "--data",
                "FILES/split",
                "--per-user",
                "LINK",
                "--summary",
                "OUT/s.json",
            ],
            ("--per-user", "--checkpoint"),
        ),
        (
            [
                "evaluate",
                "--checkpoint",
                "FILES/actor.pt",
                "--data",
                "FILES/split",
                "--per-user",
                "OUT/p.csv",
                "--summary",
                "OUT/p.csv",
            ],
            ("--per-user", "--summary"),
        ),
        (
            [
                "recommend",
                "--checkpoint",
                "FILES/actor.pt",
                "--data",
                "FILES/split",
                "--users-file",
                "FILES/notes.txt",
                "--out",
                "FILES/notes.txt",
            ],
            ("--out", "--users-file"),
        ),
        (
            [
                "recommend",
                "--checkpoint",
                "FILES/actor.pt",
                "--data",
                "FILES/split",
                "--items-file",
                "FILES/notes.txt",
                "--out",
                "FILES/notes.txt",
            ],
            ("--out", "--items-file"),
        ),
        (
            [
                "prepare",
                "--input",
                "FILES/ratings.csv",
                "--format",
                "ml-csv",
                "--out",
                "FILES/ratings.csv",
            ],
            ("--out", "--input"),
        ),
    ],
)
def test_an_output_naming_the_path_of_another_option_is_refused(
    files, tmp_path, capsys, args, flags
):
    (tmp_path / "out").mkdir()
    args = expand(args, files, tmp_path / "out")
    before = snapshot(files)
    line = refused(capsys, *args)
    assert all(f in line for f in flags), line
    assert snapshot(files) == before and list((tmp_path / "out").iterdir()) == []


def test_every_command_declares_its_path_options():
    assert set(PATH_OPTIONS) == set(COMMANDS)


def prepare(files, out):
    return ["prepare", "--input", files / "ratings.csv", "--format", "ml-csv", "--out", out]


def test_prepare_refuses_an_existing_file_or_a_folder_it_did_not_write(files, tmp_path, capsys):
    (tmp_path / "file").write_text("mine\n")
    assert "file" in refused(capsys, *prepare(files, tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "mine\n"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "users.csv").write_text("my users\n")
    line = refused(capsys, *prepare(files, tmp_path / "mine"))
    assert str(tmp_path / "mine") in line and "manifest.json" in line
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["users.csv"]
    assert (tmp_path / "mine" / "users.csv").read_text() == "my users\n"


def test_prepare_rewrites_an_empty_folder_and_its_own_split_folder(files, tmp_path):
    (tmp_path / "split").mkdir()
    for _ in range(2):  # the workflow reruns prepare into the same folder
        assert main([str(a) for a in prepare(files, tmp_path / "split")]) == 0
    assert (tmp_path / "split" / "manifest.json").exists()


def test_a_killed_prepare_leaves_temporaries_the_next_run_removes(files, tmp_path):
    # the first run dies while writing its temporary folder, as under SIGKILL
    killed = textwrap.dedent("""
        import os, sys
        import ract.data.prepare
        from ract.cli import main
        ract.data.prepare.sp.save_npz = lambda *a, **k: os._exit(9)
        main(sys.argv[1:])
    """)
    args = [str(a) for a in prepare(files, tmp_path / "split")]
    assert subprocess.run([sys.executable, "-c", killed, *args]).returncode == 9
    stray = [p for p in tmp_path.iterdir() if p.name.startswith(".split.")]
    assert stray and not (tmp_path / "split" / "manifest.json").exists()
    assert main(args) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["split"]


def test_a_running_prepare_keeps_its_temporary_folder(files, tmp_path):
    live = temporary_folder(tmp_path / "split")  # owned by this process, still running
    (live / "train.npz").write_bytes(b"half written")
    assert main([str(a) for a in prepare(files, tmp_path / "split")]) == 0
    assert (live / "train.npz").read_bytes() == b"half written"
    os.utime(live, (0, 0))  # but one a day old counts as left behind whoever owns it
    assert main([str(a) for a in prepare(files, tmp_path / "split")]) == 0
    assert not live.exists()
