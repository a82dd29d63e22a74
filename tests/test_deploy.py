"""The workflow deploys as Snakemake users deploy it: lint-clean and formatted, a pinned software
environment on every rule that runs Python, parse time without the project's venv, and usable
as a module from another folder."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import ROOT, SNAKEMAKE, snakemake, tiny_config

SMK = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
ENV = ROOT / "workflow" / "envs" / "ract.yaml"


@pytest.mark.slow
def test_snakemake_lint_finds_nothing(tmp_path):
    r = snakemake(tmp_path, tiny_config(), "--lint")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Lints for" not in r.stdout + r.stderr


@pytest.mark.slow
def test_snakefmt_leaves_the_workflow_unchanged():
    # the line length and directive order are in pyproject.toml, [tool.snakefmt]
    snakefmt = Path(sys.executable).parent / "snakefmt"
    r = subprocess.run([snakefmt, "--check", *SMK], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


PYTHON = ["ract", "workflow/scripts", "tests", "benchmarks"]


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes_over_the_python_code(check):
    # the rule set and line length are in pyproject.toml, [tool.ruff]
    ruff = Path(sys.executable).parent / "ruff"
    r = subprocess.run([ruff, *check, *PYTHON], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_rule_that_runs_a_script_has_the_conda_environment():
    rules = {}
    for path in SMK:
        for block in re.split(r"^(?=rule |use rule )", path.read_text(), flags=re.M)[1:]:
            name = re.match(r"(?:use rule \w+ as |rule )(\w+)", block).group(1)
            if block.startswith("use rule"):
                continue  # inherits its parent's directives
            if "    script:" in block:
                rules[name] = re.search(r'^    conda:\n        "([^"]+)"', block, re.M)
    assert len(rules) >= 13
    assert {name: m and m.group(1) for name, m in rules.items()} == dict.fromkeys(
        rules, "../envs/ract.yaml"
    )


def test_the_environment_pins_what_the_project_needs():
    env = yaml.safe_load(ENV.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pinned = dict(line.split("==") for line in pip if "==" in line)
    needs = re.findall(
        r'"(\w+)[><=]',
        (ROOT / "pyproject.toml").read_text().split("dependencies = [")[1].split("]")[0],
    )
    # everything `ract` and the scripts import; snakemake itself is not needed inside a job
    assert set(pinned) == {n.lower() for n in needs} - {"snakemake"}
    assert pinned["torch"].endswith("+cpu")


def test_containerize_names_the_environment_and_its_packages(tmp_path):
    # No conda can be installed here (its channels are out of reach); Snakemake only asks
    # `conda info` for the platform and `conda config` for channel priority on the way.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    info = json.dumps(
        {
            "conda_prefix": "/opt/conda",
            "platform": "linux-64",  # conda info
            "get": {"channel_priority": "strict"},
        }
    )  # conda config --get
    (bin_dir / "conda").write_text(
        f"#!/bin/sh\n[ \"$1\" = --version ] && echo 'conda 24.11.3' || echo '{info}'\n"
    )
    (bin_dir / "conda").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    r = subprocess.run(
        [
            SNAKEMAKE,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            "tiny.yaml",
            "--containerize",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("FROM ")
    assert "workflow/envs/ract.yaml" in r.stdout and "conda env create" in r.stdout
    for package in ("torch==2.13.0+cpu", "numpy==", "pandas==", "scipy==", "matplotlib=="):
        assert package in r.stdout


def test_parse_time_needs_neither_torch_nor_an_installed_ract(tmp_path):
    # A dry run in a Python where torch, numpy, pandas and an installed `ract` cannot be
    # imported: only snakemake, jsonschema, pyyaml and the `ract` beside the Snakefile.
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    blocked = ("torch", "numpy", "pandas", "scipy", "matplotlib")
    code = (
        f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
        "from snakemake.cli import main\n"
        f"main(['--snakefile', {str(ROOT / 'Snakefile')!r}, '--configfile', 'tiny.yaml',"
        " '--dry-run'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "prepare_data" in r.stdout + r.stderr


def deploy(folder, config):
    """A workflow using this one as a module, as `snakedeploy deploy-workflow` sets it up."""
    (folder / "config").mkdir(parents=True)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "Snakefile").write_text(f'''configfile: "config/config.yaml"


module ract:
    snakefile:
        "{ROOT / "Snakefile"}"
    config:
        config


use rule * from ract
''')
    return folder


@pytest.mark.slow
def test_a_study_runs_as_a_module_from_another_folder(tmp_path, download_cache):
    work = deploy(tmp_path / "deployed", tiny_config())
    download_cache(work / "data" / "raw")
    r = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    table = (work / "results" / "ml-100k" / "comparison.csv").read_text()
    assert "RaCT" in table and "Mult-VAE" in table
