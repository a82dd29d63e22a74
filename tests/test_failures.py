"""Failures that are not bad input (a full disk, memory, a bug) end in one line, `ract: error:
...`, on stderr and in a workflow job's log, with exit status 1 and no half-written output."""

import subprocess
import sys
from pathlib import Path

import pytest

from ract import cli
from ract.data.prepare import PrepareConfig, prepare_split
from ract.errors import error_line, writing

from conftest import make_interactions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs filled to the last byte by a file `filler`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mount.stderr.strip()}")
    try:
        with open(disk / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def ract(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ract", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ract: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_train_on_a_full_disk_says_so_in_one_line(full_disk, tmp_path):
    prepare_split(make_interactions(), PrepareConfig(heldout_users=0.15), tmp_path / "split")
    r = ract("train", "--stage", "actor_pretrain", "--data", tmp_path / "split",
             "--out", full_disk / "a.pt", "--history", full_disk / "a.csv", "--epochs", "1",
             "--device", "cpu")
    assert r.returncode == 1
    assert one_error_line(r.stderr) == f"ract: error: disk full (or quota) writing {full_disk}/a.pt"
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # nothing half-written


def test_prepare_on_a_full_disk_says_so_in_one_line(full_disk, tmp_path):
    make_interactions().to_csv(tmp_path / "ratings.csv", index=False)
    r = ract("prepare", "--input", tmp_path / "ratings.csv", "--format", "csv",
             "--out", full_disk / "split")
    assert r.returncode == 1
    assert one_error_line(r.stderr) == (
        f"ract: error: disk full (or quota) writing {full_disk}/split")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_unexpected_exception_is_one_line_and_verbose_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise ValueError("Expected more than 1 value per channel when training")

    monkeypatch.setitem(cli.COMMANDS, "fetch", broken)
    assert cli.main(["fetch", "--dataset", "ml-100k"]) == 1
    err = capsys.readouterr().err
    assert one_error_line(err) == (
        "ract: error: unexpected ValueError: Expected more than 1 value per channel when "
        "training (run again as `ract -v ...` to see the traceback)")
    assert cli.main(["-v", "fetch", "--dataset", "ml-100k"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err
    assert err.strip().splitlines()[-1].endswith("(traceback above)")


@pytest.mark.parametrize("exc,line", [
    (PermissionError(13, "Permission denied", "out/a.pt"), "out/a.pt: permission denied"),
    (FileNotFoundError(2, "No such file or directory", "x.pt"), "x.pt: no such file or directory"),
    (OSError(28, "No space left on device"), "disk full (or quota)"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"),
    (RuntimeError("unexpected pos 3136 vs 3030"), "unexpected RuntimeError: unexpected pos 3136 "
     "vs 3030 (see LOG)"),  # a short write is a full disk only while writing a file
])
def test_error_line(exc, line):
    assert error_line(exc, "see LOG") == f"ract: error: {line}"


def test_error_line_names_the_file_being_written():
    with pytest.raises(RuntimeError) as info, writing("out/a.pt"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3136 vs "
                           "3030")
    assert error_line(info.value, "") == "ract: error: disk full (or quota) writing out/a.pt"


# A rule script's body, run by adapter.run as Snakemake would, with a log file.
JOB = """
import sys
from types import SimpleNamespace
sys.path.insert(0, {scripts!r})
from adapter import run

def main():
    {body}

run(SimpleNamespace(log=[{log!r}]), main)
"""


@pytest.mark.parametrize("body,message", [
    ("raise KeyError('resume')", "unexpected KeyError: 'resume' (full traceback in LOG)"),
    ("raise MemoryError()", "out of memory"),
    ("import torch; torch.empty(10 ** 14)", "out of memory: DefaultCPUAllocator: can't "
     "allocate memory: you tried to allocate 400000000000000 bytes."),
])
def test_workflow_job_logs_one_line_and_the_traceback(tmp_path, body, message):
    log = tmp_path / "job.log"
    r = subprocess.run([sys.executable, "-c", JOB.format(scripts=str(ROOT / "workflow/scripts"),
                                                         body=body, log=str(log))],
                       capture_output=True, text=True)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert line.startswith("ract: error: " + message.replace("LOG", str(log))), line
    text = log.read_text()
    logged = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert len(logged) == 1 and logged[0].endswith(line), text
    assert "Traceback (most recent call last)" in text and "in main" in text
