"""The README's "Use from Python" block runs as written against a tiny finished study."""

import re
from pathlib import Path

from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.splits import load_split
from ract.train import stage_defaults, train_stage

from conftest import make_interactions
from test_train import small_actor

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    section = README.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_use_from_python_snippet_runs_verbatim(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    prepare_split(make_interactions(), PrepareConfig(heldout_users=0.15), "results/ml-100k/split")
    data, run = load_split("results/ml-100k/split"), Path("results/ml-100k/main/seed1")
    start = None
    for stage in ("actor_pretrain", "critic_pretrain", "finetune"):
        cfg = stage_defaults(stage, epochs=1, batch_size=64, min_steps=0, validate_every=0)
        train_stage(
            data,
            cfg,
            out_checkpoint=run / f"{stage}.pt",
            history_path=run / f"{stage}_history.csv",
            pre_model_path=start,
            actor_cfg=small_actor(data.n_items),
        )
        start = run / f"{stage}.pt"
    exec(python_block("Use from Python"), {})
    out = capsys.readouterr().out
    assert "'stage': 'finetune'" in out and "val_ndcg@100" in out
    assert out.count("\n") >= 8  # info, five recommendations with a header, the kept epoch


def test_every_script_and_result_the_docs_name_is_committed():
    """A benchmark the README cites but .gitignore keeps out would vanish from every clone."""
    import subprocess

    root = README.parent
    tracked = set(
        subprocess.run(
            ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    named = set()
    for doc in (README, root / "benchmarks" / "README.md"):
        named |= set(re.findall(r"\bbenchmarks/[\w./-]+\.(?:py|md|json|csv)\b", doc.read_text()))
    assert named, "the docs name no benchmark files: the pattern is stale"
    missing = sorted(p for p in named if p not in tracked)
    assert not missing, f"named in the docs but not committed: {missing}"
