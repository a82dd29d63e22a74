"""The benchmark summary page gathers every result page the README cites."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their shared module


def load_run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_gathers_the_other_result_pages_and_says_when_no_gpu_ran(tmp_path):
    run = load_run()
    (tmp_path / "peer.md").write_text(
        "# Own title\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## Part\n"
    )
    cpu = {"gpu": None}
    lines = run.further_measurements(cpu, "cpu", out=tmp_path)
    text = "\n".join(lines)
    assert "## End to end against RecBole (from `benchmarks/results/peer.md`)" in text
    assert "Own title" not in text and "| 1 | 2 |" in text
    assert "\n### Part" in text  # its headings sit one level below
    assert "No GPU was available" in text
    assert "bf16" not in text  # absent pages are left out, not invented
    (tmp_path / "gpu.md").write_text("# GPU\n\nfigures\n")
    text = "\n".join(run.further_measurements({"gpu": "H200"}, "cuda", out=tmp_path))
    assert "No GPU was available" not in text and "figures" in text
