"""Failures that are not bad input (a full disk, memory, a bug) end in one line, `ract: error:
...`, on stderr and in a workflow job's log, with exit status 1 and no half-written output."""

import subprocess
import sys
import time
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
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
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
    return subprocess.run(
        [sys.executable, "-m", "ract", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ract: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_train_on_a_full_disk_says_so_in_one_line(full_disk, tmp_path):
    prepare_split(make_interactions(), PrepareConfig(heldout_users=0.15), tmp_path / "split")
    r = ract(
        "train",
        "--stage",
        "actor_pretrain",
        "--data",
        tmp_path / "split",
        "--out",
        full_disk / "a.pt",
        "--history",
        full_disk / "a.csv",
        "--epochs",
        "1",
        "--device",
        "cpu",
    )
    assert r.returncode == 1
    assert (
        one_error_line(r.stderr) == f"ract: error: disk full (or quota) writing {full_disk}/a.pt"
    )
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # nothing half-written


def test_prepare_on_a_full_disk_says_so_in_one_line(full_disk, tmp_path):
    make_interactions().to_csv(tmp_path / "ratings.csv", index=False)
    r = ract(
        "prepare",
        "--input",
        tmp_path / "ratings.csv",
        "--format",
        "csv",
        "--out",
        full_disk / "split",
    )
    assert r.returncode == 1
    assert one_error_line(r.stderr) == (
        f"ract: error: disk full (or quota) writing {full_disk}/split"
    )
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_unexpected_exception_is_one_line_and_verbose_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise ValueError("Expected more than 1 value per channel when training")

    monkeypatch.setitem(cli.COMMANDS, "fetch", broken)
    assert cli.main(["fetch", "--dataset", "ml-100k"]) == 1
    err = capsys.readouterr().err
    assert one_error_line(err) == (
        "ract: error: unexpected ValueError: Expected more than 1 value per channel when "
        "training (run again as `ract -v ...` to see the traceback)"
    )
    assert cli.main(["-v", "fetch", "--dataset", "ml-100k"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err
    assert err.strip().splitlines()[-1].endswith("(traceback above)")


@pytest.mark.parametrize(
    "exc,line",
    [
        (PermissionError(13, "Permission denied", "out/a.pt"), "out/a.pt: permission denied"),
        (
            FileNotFoundError(2, "No such file or directory", "x.pt"),
            "x.pt: no such file or directory",
        ),
        (OSError(28, "No space left on device"), "disk full (or quota)"),
        (
            RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        (
            RuntimeError("unexpected pos 3136 vs 3030"),
            "unexpected RuntimeError: unexpected pos 3136 vs 3030 (see LOG)",
        ),  # a short write is a full disk only while writing a file
    ],
)
def test_error_line(exc, line):
    assert error_line(exc, "see LOG") == f"ract: error: {line}"


def test_error_line_names_the_file_being_written():
    with pytest.raises(RuntimeError) as info, writing("out/a.pt"):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 3136 vs 3030"
        )
    assert error_line(info.value, "") == "ract: error: disk full (or quota) writing out/a.pt"


# A rule script's body, run by adapter.run as Snakemake would, with a log file.
JOB = """
import sys
from types import SimpleNamespace
sys.path.insert(0, {scripts!r})
from adapter import run

def main():
    {body}

run(SimpleNamespace(log=[{log!r}], input={inputs!r}, output=["out.pt"], rule="job"), main)
"""


def job(tmp_path, body, inputs=()):
    """Run a job body through adapter.run in `tmp_path` (its working directory)."""
    log = tmp_path / "job.log"
    code = JOB.format(
        scripts=str(ROOT / "workflow/scripts"), body=body, log=str(log), inputs=list(inputs)
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ), log


@pytest.mark.parametrize(
    "body,message",
    [
        ("raise KeyError('resume')", "unexpected KeyError: 'resume' (full traceback in LOG)"),
        ("raise MemoryError()", "out of memory"),
        (
            "import torch; torch.empty(10 ** 14)",
            "out of memory: DefaultCPUAllocator: can't "
            "allocate memory: you tried to allocate 400000000000000 bytes.",
        ),
    ],
)
def test_workflow_job_logs_one_line_and_the_traceback(tmp_path, body, message):
    proc, log = job(tmp_path, body)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    line = one_error_line(stderr)
    assert line.startswith("ract: error: " + message.replace("LOG", str(log))), line
    text = log.read_text()
    logged = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert len(logged) == 1 and logged[0].endswith(line), text
    assert "Traceback (most recent call last)" in text and "in main" in text


def test_a_job_still_running_from_a_killed_snakemake_stops_its_twin(tmp_path):
    orphan, _ = job(tmp_path, "import time; time.sleep(60)")
    try:
        deadline = time.monotonic() + 60
        while (
            not list(tmp_path.glob(".ract/locks/*.lock"))
            or not next(tmp_path.glob(".ract/locks/*.lock")).read_text()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        twin, log = job(tmp_path, "open('out.pt', 'w').write('twin')")
        _, stderr = twin.communicate(timeout=120)
        assert twin.returncode == 1 and not (tmp_path / "out.pt").exists()
        assert one_error_line(stderr) == (
            f"ract: error: another process (pid {orphan.pid}) is still running this job, left "
            "by a Snakemake run that was stopped; wait for it to end or stop it "
            f"(kill {orphan.pid}), then run again"
        )
        assert log.read_text().count(" ERROR ") == 1
    finally:
        orphan.kill()
        orphan.wait()
    twin, _ = job(tmp_path, "open('out.pt', 'w').write('twin')")  # the lock died with it
    assert twin.wait(timeout=120) == 0 and (tmp_path / "out.pt").read_text() == "twin"


def test_a_damaged_input_names_the_rule_that_makes_it(tmp_path):
    from ract.provenance import record_job

    ckpt = "results/d/main/seed1/actor_pretrain.pt"
    record_job("actor_pretrain", ["results/d/split/manifest.json"], [ckpt], root=tmp_path)
    record_job(
        "prepare_data",
        [],
        ["results/d/split/manifest.json", "results/d/split/train.npz"],
        root=tmp_path,
    )
    for path, rule in (
        (ckpt, "actor_pretrain"),
        ("results/d/split/test_exclude.npz", "prepare_data"),
    ):
        body = f"from ract.errors import RactError; raise RactError('{path}: damaged')"
        proc, _ = job(tmp_path, body, inputs=[ckpt, "results/d/split/manifest.json"])
        _, stderr = proc.communicate(timeout=120)
        assert one_error_line(stderr) == (
            f"ract: error: {path}: damaged; rule {rule} makes it here: delete {path} and run "
            "again to remake it and everything made from it"
        )
    # a file the job does not read is not the job's input to blame
    proc, _ = job(tmp_path, f"from ract.errors import RactError; raise RactError('{ckpt}: x')")
    assert one_error_line(proc.communicate(timeout=120)[1]) == f"ract: error: {ckpt}: x"


def test_a_job_runs_the_ract_beside_its_workflow(tmp_path):
    # a copy of the project, whose `ract` is not the one installed in this environment
    from test_workflow import copy_project

    repo = copy_project(tmp_path / "repo")
    code = JOB.format(
        scripts=str(repo / "workflow/scripts"),
        body="import ract; print(ract.__file__)",
        log=str(tmp_path / "job.log"),
        inputs=[],
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(repo / "ract" / "__init__.py")
