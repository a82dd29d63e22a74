"""Faults injected on purpose: writers that fail or are killed mid-file, training killed and
resumed, numerical faults. Nothing may be lost, torn or silently wrong."""

import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from ract.checkpoint import read_state
from ract.io import atomic_path, write_csv


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, pd.DataFrame({"a": [1, 2]}))
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("a\n1\n")  # half of a new table
            raise RuntimeError("disk full")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


WRITER = textwrap.dedent("""
    import sys, torch
    from ract.checkpoint import save_checkpoint
    i = 0
    while True:  # ~40 MB checkpoints, rewritten until killed
        models = {"actor_args": {"n_items": 10},
              "actor_state": {"w": torch.full((10_000_000,), float(i))},
                  "critic_args": None, "critic_state": None}
        save_checkpoint(sys.argv[1], stage="actor_pretrain", epoch=i, models=models,
                        data_hash="h")
        i += 1
""")


def test_a_reader_never_sees_a_torn_checkpoint_even_when_the_writer_is_killed(tmp_path):
    path = tmp_path / "model.pt"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    seen, deadline = set(), time.monotonic() + 60
    try:
        while len(seen) < 3 and time.monotonic() < deadline:
            if path.exists():
                state = read_state(path)  # raises on a torn or foreign file
                w = state["actor_state"]["w"]
                assert torch.all(w == state["epoch"])  # complete: every value of one write
                seen.add(state["epoch"])
        assert len(seen) >= 3, "the writer did not produce three checkpoints in 60 s"
    finally:
        os.kill(writer.pid, signal.SIGKILL)  # killed wherever it is, possibly mid-write
        writer.wait()
    state = read_state(path)
    assert torch.all(state["actor_state"]["w"] == state["epoch"])
    # a killed writer can leave its temporary behind, but never under the real name
    assert {p.name for p in tmp_path.iterdir()} - {"model.pt"} <= {
        p.name for p in tmp_path.glob(".model.pt.*.tmp")
    }


# ----------------------------------------------------------------------------------------------
# Kill and resume


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    from conftest import make_interactions
    from ract.data.prepare import PrepareConfig, prepare_split

    out = tmp_path_factory.mktemp("resume") / "split"
    prepare_split(make_interactions(), PrepareConfig(heldout_users=0.15), out)
    return out


def train_cmd(split, out, stage, epochs, *extra):
    return [
        sys.executable,
        "-m",
        "ract",
        "train",
        "--stage",
        stage,
        "--data",
        str(split),
        "--out",
        str(out / f"{stage}.pt"),
        "--history",
        str(out / f"{stage}.csv"),
        "--epochs",
        str(epochs),
        "--batch-size",
        "16",
        "--latent-dimension",
        "8",
        "--mlp-hidden-size",
        "32",
        "--critic-layers",
        "8",
        "4",
        "--min-steps",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        *map(str, extra),
    ]


def kill_when_resumable(cmd, resume, sig, min_epoch=3):
    """Start `cmd`, wait until its resume point has reached `min_epoch`, send `sig`."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if resume.exists() and read_state(resume, "resume point")["epoch"] >= min_epoch:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the stage finished before it could be killed"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def assert_same_run(a, b, stage):
    sa, sb = read_state(a / f"{stage}.pt"), read_state(b / f"{stage}.pt")
    assert sa["epoch"] == sb["epoch"] and sa["updates"] == sb["updates"]
    for part in ("actor_state", "critic_state"):
        if sa[part] is not None:
            for k in sa[part]:
                assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    ha, hb = (
        pd.read_csv(d / f"{stage}.csv").drop(columns=["seconds", "train_seconds"]) for d in (a, b)
    )
    pd.testing.assert_frame_equal(ha, hb)


@pytest.mark.slow
def test_a_stage_killed_with_sigkill_resumes_and_ends_as_if_never_killed(split_dir, tmp_path):
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    plain.mkdir(), killed.mkdir()
    assert subprocess.run(train_cmd(split_dir, plain, "actor_pretrain", 30)).returncode == 0
    resume = killed / "resume.pt"
    cmd = train_cmd(
        split_dir, killed, "actor_pretrain", 30, "--resume", resume, "--resume-every", 0
    )
    code, _ = kill_when_resumable(cmd, resume, signal.SIGKILL)
    assert code == -signal.SIGKILL and not (killed / "actor_pretrain.pt").exists()
    stopped_at = read_state(resume)["epoch"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"actor_pretrain: resuming after epoch {stopped_at} from {resume}" in r.stderr
    assert not resume.exists()  # removed once the stage is complete
    assert_same_run(plain, killed, "actor_pretrain")


@pytest.mark.slow
def test_sigterm_stops_after_the_batch_writes_a_resume_point_and_the_rerun_matches(
    split_dir, tmp_path
):
    plain, stopped = tmp_path / "plain", tmp_path / "stopped"
    plain.mkdir(), stopped.mkdir()
    assert subprocess.run(train_cmd(split_dir, plain, "actor_pretrain", 3)).returncode == 0
    start = ["--pre-model-path", plain / "actor_pretrain.pt"]
    assert (
        subprocess.run(train_cmd(split_dir, plain, "critic_pretrain", 40, *start)).returncode == 0
    )
    resume = stopped / "resume.pt"
    # written only on SIGTERM: the file must come from the signal, not from the timer
    cmd = train_cmd(
        split_dir,
        stopped,
        "critic_pretrain",
        40,
        *start,
        "--resume",
        resume,
        "--resume-every",
        3600,
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    history = stopped / "critic_pretrain.csv"  # grows by one row per epoch
    while not (history.exists() and len(history.read_text().splitlines()) > 4):
        assert proc.poll() is None and time.monotonic() < deadline, "never reached epoch 3"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.startswith("ract: error:")]
    assert proc.returncode == 1 and len(lines) == 1, err  # a runtime stop, not a usage error
    assert "critic_pretrain: stopped by SIGTERM" in lines[0]
    assert re.search(
        rf"resume point after epoch \d+ in {re.escape(str(resume))}; run the same "
        "command again to continue",
        lines[0],
    )
    assert resume.exists() and not (stopped / "critic_pretrain.pt").exists()
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "critic_pretrain: resuming after epoch" in r.stderr, r.stderr
    assert_same_run(plain, stopped, "critic_pretrain")


@pytest.mark.slow
def test_a_resume_point_from_other_settings_is_ignored(split_dir, tmp_path):
    resume = tmp_path / "resume.pt"
    cmd = train_cmd(
        split_dir, tmp_path, "actor_pretrain", 30, "--resume", resume, "--resume-every", 0
    )
    kill_when_resumable(cmd, resume, signal.SIGKILL)
    other = train_cmd(
        split_dir, tmp_path, "actor_pretrain", 30, "--resume", resume, "--learning-rate", "0.01"
    )
    r = subprocess.run(other, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ignoring resume point" in r.stderr and "resuming" not in r.stderr
    assert pd.read_csv(tmp_path / "actor_pretrain.csv")["epoch"].tolist() == list(range(31))


ACTOR = "results/ml-100k/main/seed{}/actor_pretrain.pt"


def snakemake_study(workdir, seeds, epochs=150, *targets):
    """Start the tiny ml-100k study (its own process group) up to the actors of `seeds`."""
    import yaml
    from test_workflow import ROOT, SNAKEMAKE, tiny_config

    config = tiny_config()
    config["seeds"] = list(seeds)
    config["stages"]["actor_pretrain"]["epochs"] = epochs
    workdir.mkdir(exist_ok=True)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [
            SNAKEMAKE,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            "tiny.yaml",
            "--cores",
            "4",
            "--rerun-incomplete",
            *(targets or [ACTOR.format(s) for s in seeds]),
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def alone(tmp_path_factory, download_cache):
    """Seed 1's actor, trained by the workflow with nothing else running."""
    workdir = tmp_path_factory.mktemp("alone")
    download_cache(workdir / "data" / "raw")
    proc = snakemake_study(workdir, [1])
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
    return workdir


def assert_same_actor(a, b):
    sa, sb = read_state(a), read_state(b)
    assert sa["epoch"] == sb["epoch"]
    assert all(torch.equal(sa["actor_state"][k], sb["actor_state"][k]) for k in sa["actor_state"])


def test_snakemake_rerun_of_a_killed_training_job_resumes_it(alone, tmp_path, download_cache):
    download_cache(tmp_path / "data" / "raw")
    log = tmp_path / "logs/ml-100k/main/seed1/actor_pretrain.log"
    proc = snakemake_study(tmp_path, [1])

    def epochs_logged():
        text = log.read_text() if log.exists() else ""
        return max(map(int, re.findall(r"actor_pretrain epoch (\d+)/", text)), default=0)

    deadline = time.monotonic() + 300
    while epochs_logged() < 20:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # as a scheduler's wall-time limit or pre-emption does
    proc.wait(timeout=120)
    assert proc.returncode != 0 and not (tmp_path / ACTOR.format(1)).exists()
    assert (tmp_path / "results/ml-100k/main/seed1/resume/actor_pretrain.pt").exists()
    proc = snakemake_study(tmp_path, [1])  # Snakemake reruns the incomplete job
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
    assert "actor_pretrain: resuming after epoch" in log.read_text()
    assert_same_actor(alone / ACTOR.format(1), tmp_path / ACTOR.format(1))


def test_two_seeds_in_parallel_do_not_interfere(alone, tmp_path, download_cache):
    download_cache(tmp_path / "data" / "raw")
    proc = snakemake_study(tmp_path, [1, 2])  # two 2-thread jobs at once under --cores 4
    assert proc.wait(timeout=600) == 0, proc.stdout.read()[-3000:]
    assert_same_actor(alone / ACTOR.format(1), tmp_path / ACTOR.format(1))
    a, b = (read_state(tmp_path / ACTOR.format(s))["actor_state"] for s in (1, 2))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two seeds, two different runs


@pytest.mark.slow
def test_sigterm_drops_the_running_epoch_when_it_keeps_snapshots(split_dir, tmp_path, monkeypatch):
    """Long epochs (here: every epoch, threshold 0) keep each epoch's snapshot in memory, so
    SIGTERM stops after the current batch and the rerun redoes that epoch from its start."""
    from ract import resume as resume_module, train
    from ract.data.splits import load_split
    from ract.model import ActorConfig

    monkeypatch.setattr(resume_module, "EAGER_SNAPSHOT_SECONDS", 0.0)
    data = load_split(split_dir)
    cfg = train.stage_defaults("actor_pretrain", epochs=6, batch_size=16, seed=3)
    actor = ActorConfig(n_items=data.n_items, latent_dimension=8, mlp_hidden_size=(32,))

    def run(out, resume=None):
        out.mkdir(exist_ok=True)
        return train.train_stage(
            data,
            cfg,
            out_checkpoint=out / "actor_pretrain.pt",
            history_path=out / "actor_pretrain.csv",
            actor_cfg=actor,
            resume_path=resume,
            resume_every=3600,
        )

    run(tmp_path / "plain")
    step, calls = train._Run._likelihood_step, []

    def step_then_sigterm(self, *args):
        calls.append(1)
        if len(calls) == 2 * math.ceil(data.train.shape[0] / 16) + 3:  # epoch 3, batch 3
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, *args)

    monkeypatch.setattr(train._Run, "_likelihood_step", step_then_sigterm)
    resume = tmp_path / "resume.pt"
    with pytest.raises(
        resume_module.Interrupted,
        match=r"actor_pretrain: stopped by SIGTERM in epoch 3 after batch 3 of "
        r"\d+; resume point after epoch 2 in ",
    ):
        run(tmp_path / "stopped", resume)
    assert read_state(resume)["epoch"] == 2
    monkeypatch.setattr(train._Run, "_likelihood_step", step)
    run(tmp_path / "stopped", resume)
    assert_same_run(tmp_path / "plain", tmp_path / "stopped", "actor_pretrain")
