"""The code a workflow job runs is found from the real imports, and files lost under a finished
result are found from the jobs' records (`ract.provenance`)."""

import json
import os
import re
import shutil
from modulefinder import ModuleFinder
from pathlib import Path

import pytest

from ract.provenance import RECORDS, code_files, code_hash, lost_files, record_job

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"
PACKAGE = ROOT / "ract"


def imported_by_modulefinder(script: Path) -> set[Path]:
    """The project files a script imports, found by the standard library's ModuleFinder (a
    second, independent reading of the imports), confined to the project (torch and the rest
    are not followed)."""
    finder = ModuleFinder(path=[str(SCRIPTS), str(ROOT)])
    finder.run_script(str(script))
    return {
        Path(m.__file__).resolve()
        for m in finder.modules.values()
        if m.__file__ and Path(m.__file__).resolve().is_relative_to(ROOT)
    }


@pytest.mark.parametrize("script", sorted(SCRIPTS.glob("*.py")), ids=lambda p: p.name)
def test_a_scripts_code_is_every_project_module_it_imports(script):
    assert set(code_files(script)) == imported_by_modulefinder(script)


def test_the_code_of_each_kind_of_job_follows_indirect_imports():
    def names(script):
        return {str(f.relative_to(ROOT)) for f in code_files(SCRIPTS / script)}

    # imported only through another module (splits -> prepare, baselines -> checkpoint)
    assert {"ract/data/prepare.py", "ract/data/splits.py"} <= names("train_stage.py")
    assert "ract/checkpoint.py" in names("fit_baseline.py")
    # and nothing a job does not run: training code is not part of preparing or comparing
    assert "ract/model.py" not in names("prepare_data.py") | names("compare.py")
    assert "ract/stats.py" not in names("train_stage.py")


def test_the_code_hash_changes_with_any_file_of_the_closure_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("x = 1\n")
    (pkg / "unused.py").write_text("y = 2\n")
    script = tmp_path / "job.py"
    script.write_text("import os\nfrom pkg.a import *\n")
    assert {f.name for f in code_files(script, pkg)} == {
        "job.py",
        "__init__.py",
        "a.py",
        "b.py",
        "c.py",
    }
    before = code_hash(script, pkg)
    (pkg / "unused.py").write_text("y = 3\n")
    assert code_hash(script, pkg) == before
    (pkg / "c.py").write_text("x = 2\n")  # reached only through a lazy relative import
    assert code_hash(script, pkg) != before


def test_a_copy_of_the_project_hashes_the_same_wherever_it_lies(tmp_path):
    # The same code must not count as changed when the checkout moves: copies whose package
    # and scripts sort in the other order by absolute path ("a/" before "z/", and the reverse)
    hashes = set()
    for top, scripts in (("a", "z"), ("z", "a")):
        shutil.copytree(PACKAGE, tmp_path / top / "ract", ignore=shutil.ignore_patterns("__py*"))
        shutil.copytree(ROOT / "workflow" / "scripts", tmp_path / scripts / "scripts")
        job = tmp_path / scripts / "scripts" / "train_stage.py"
        hashes.add(code_hash(job, tmp_path / top / "ract"))
        shutil.rmtree(tmp_path / top), shutil.rmtree(tmp_path / scripts)
    assert hashes == {code_hash(ROOT / "workflow" / "scripts" / "train_stage.py", PACKAGE)}


def test_every_rule_that_runs_a_script_hashes_that_scripts_code():
    rules = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    scripts, hashed = {}, {}
    for path in rules:
        for block in re.split(r"^(?=rule |use rule )", path.read_text(), flags=re.M)[1:]:
            name = re.match(r"(?:use rule \w+ as |rule )(\w+)", block).group(1)
            parent = re.match(r"use rule (\w+) as", block)
            script = re.search(r'script:\s*"\.\./scripts/(\w+)\.py"', block)
            scripts[name] = script.group(1) if script else scripts.get(parent and parent[1])
            # `code=code_hash("X")`, or a lambda, which snakefmt wraps in parentheses when long
            code = re.search(r'code=(?:lambda w: \(?\s*)?code_hash\("(\w+)"\)', block)
            hashed[name] = code.group(1) if code else hashed.get(parent and parent[1])
    runs = {rule: script for rule, script in scripts.items() if script}
    assert len(runs) >= 15
    assert {rule: hashed.get(rule) for rule in runs} == runs


def test_lost_files_follow_the_records_from_the_targets(tmp_path):
    def make(*paths):
        for p in paths:
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).write_text("x")

    make(
        "raw.csv",
        "split.json",
        "a.pt",
        "a_history.csv",
        "a_eval.json",
        "table.csv",
        "old.pt",
        "old_eval.json",
    )
    record_job("prepare", ["raw.csv"], ["split.json"], root=tmp_path)
    record_job("train", ["split.json"], ["a.pt", "a_history.csv"], root=tmp_path)
    record_job("evaluate", ["split.json", "a.pt"], ["a_eval.json"], root=tmp_path)
    record_job("compare", ["a_eval.json", "a_history.csv"], ["table.csv"], root=tmp_path)
    record_job("evaluate", ["old.pt"], ["old_eval.json"], root=tmp_path)  # not under a target
    assert lost_files(["table.csv"], root=tmp_path) == []
    for p in ("a.pt", "old.pt", "raw.csv"):  # raw.csv is a source: Snakemake's to report
        (tmp_path / p).unlink()
    assert lost_files(["table.csv"], root=tmp_path) == ["a.pt"]
    (tmp_path / "a_history.csv").unlink()  # both outputs of the job gone
    assert lost_files(["table.csv"], root=tmp_path) == ["a.pt", "a_history.csv"]
    (tmp_path / "split.json").unlink()
    assert lost_files(["table.csv"], root=tmp_path) == ["a.pt", "a_history.csv", "split.json"]
    # a rerun replaces the job's record; a torn record adds nothing and breaks nothing
    record_job("train", ["split.json", "extra.csv"], ["a.pt", "a_history.csv"], root=tmp_path)
    assert len(list((tmp_path / RECORDS).glob("*.json"))) == 5
    (tmp_path / RECORDS / "torn.json").write_text('{"rule": "x", "outp')
    assert lost_files(["table.csv"], root=tmp_path) == ["a.pt", "a_history.csv", "split.json"]
    record = json.loads(next((tmp_path / RECORDS).glob("*.json")).read_text())
    assert set(record) == {"rule", "inputs", "outputs"}
    assert not [p for p in os.listdir(tmp_path / RECORDS) if p.endswith(".tmp")]
