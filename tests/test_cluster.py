"""The workflow submitted to a real SLURM cluster through workflow/profiles/slurm: every job but
the local ones runs as its own SLURM job (sacct: COMPLETED, one per planned job), the results
equal a local run of the same config, and a failing job fails the run and names its SLURM log.

Opt-in, since it submits about twenty jobs: RACT_CLUSTER_TEST=1, on a machine whose `sbatch`
and `sacct` reach a cluster with accounting. `make cluster-test` starts a one-node cluster on
this machine (tests/cluster/slurm.sh, root, Debian) and runs this test. RACT_CLUSTER_ARGS adds
snakemake arguments for a real site (e.g. `--default-resources slurm_account=x
slurm_partition=y`); there, run pytest with --basetemp on a folder the compute nodes share."""

import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from test_workflow import ROOT, SNAKEMAKE, planned_jobs, tiny_config

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("RACT_CLUSTER_TEST") != "1",
        reason="cluster test: submits jobs to SLURM, so runs only with RACT_CLUSTER_TEST=1 "
        + ("(a SLURM client is installed here)" if shutil.which("sbatch") else "(no SLURM here)")
        + "; `make cluster-test` starts a one-node cluster on this machine and runs it",
    ),
]

PROFILE = ROOT / "workflow/profiles/slurm"
RUN_LIMIT_S = 900  # every snakemake call is killed (timeout -s KILL) after this long
# A small node (the CI machine: 2 cores) runs the real profile with less per job: one thread
# (so two jobs run side by side) and a memory request the node can hold twice.
SMALL_JOBS = [
    "--max-threads",
    "1",
    "--set-resources",
    *(
        f"{rule}:mem_mb=2000"
        for rule in yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]
    ),
]
# Test-only plugin settings: quick first status check, every job's SLURM log kept to inspect.
TEST_ONLY = ["--slurm-init-seconds-before-status-checks", "5", "--slurm-keep-successful-logs"]
SUBMITTED = re.compile(
    r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.$", re.M
)
JOB_HEADER = re.compile(r"^(local)?rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)$", re.M)


def cluster_config():
    config = tiny_config()
    config["seeds"] = [1, 2]
    config["models"] = ["popularity"]  # one cheap baseline: its rules run on SLURM too
    return config


def run(workdir, config, *args):
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(
        [
            "timeout",
            "-s",
            "KILL",
            str(RUN_LIMIT_S),
            SNAKEMAKE,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--configfile",
            "tiny.yaml",
            *args,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
    )


def run_on_slurm(workdir, config):
    return run(
        workdir,
        config,
        "--profile",
        str(PROFILE),
        *SMALL_JOBS,
        *TEST_ONLY,
        *shlex.split(os.environ.get("RACT_CLUSTER_ARGS", "")),
    )


def sacct(slurm_ids):
    """{SLURM job id: (state, exit code)} of whole jobs (not their steps)."""
    r = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(slurm_ids)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return {
        job: (state, code)
        for job, state, code in (line.split("|") for line in r.stdout.splitlines() if line)
    }


def local_rules():
    """Rules Snakemake runs itself instead of submitting them: those marked `localrule: True`
    (`all` among them)."""
    names = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]:
        for block in re.split(r"^(?=rule )", path.read_text(), flags=re.M)[1:]:
            if re.search(r"^    localrule: True$", block, re.M):
                names.add(re.match(r"rule (\w+):", block).group(1))
    return names


def summaries(workdir):
    return {
        str(p.relative_to(workdir)): json.loads(p.read_text())
        for p in sorted(workdir.glob("results/**/eval/*_summary.json"))
    }


def assert_close(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def cluster():
    """Fail, not skip, when asked for and no cluster answers: a CI run must not pass by
    skipping its cluster test."""
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm"), (
        "no snakemake-executor-plugin-slurm: pip install -e '.[slurm]'"
    )
    assert shutil.which("sbatch") and shutil.which("sacct"), "no sbatch/sacct on PATH"
    r = subprocess.run(
        ["sinfo", "-h", "-o", "%a %D %T"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip(), f"no SLURM cluster answers: {r.stderr}"


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory, download_cache):
    workdir = tmp_path_factory.mktemp("slurm")
    download_cache(workdir / "data" / "raw")
    planned = planned_jobs(workdir, cluster_config())
    r = run_on_slurm(workdir, cluster_config())
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return workdir, planned, r.stdout + r.stderr


def test_every_planned_job_but_the_local_ones_ran_as_a_completed_slurm_job(slurm_run):
    workdir, planned, out = slurm_run
    local = local_rules()
    rule_of = {jobid: rule for _, rule, jobid in JOB_HEADER.findall(out)}
    assert {rule for is_local, rule, _ in JOB_HEADER.findall(out) if is_local} <= local
    submitted = SUBMITTED.findall(out)
    ran = {}
    for jobid, _, _ in submitted:
        ran[rule_of[jobid]] = ran.get(rule_of[jobid], 0) + 1
    assert ran == {rule: n for rule, n in planned.items() if rule not in local}
    slurm_ids = [slurm_id for _, slurm_id, _ in submitted]
    assert len(set(slurm_ids)) == len(slurm_ids) == sum(ran.values())
    assert sacct(slurm_ids) == {slurm_id: ("COMPLETED", "0:0") for slurm_id in slurm_ids}
    for jobid, slurm_id, log in submitted:  # kept: --slurm-keep-successful-logs
        assert f"rule {rule_of[jobid]}:" in (workdir / log).read_text(), log


def test_results_equal_a_local_run(slurm_run, tmp_path, download_cache):
    workdir, _, _ = slurm_run
    download_cache(tmp_path / "data" / "raw")
    r = run(tmp_path, cluster_config(), "--cores", "2", "--max-threads", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    on_slurm, local = summaries(workdir), summaries(tmp_path)
    assert len(local) == 10 and on_slurm.keys() == local.keys()
    for path in local:
        assert_close(on_slurm[path], local[path], path)


def test_failing_job_fails_the_run_and_names_its_slurm_log(cluster, tmp_path):
    (tmp_path / "bad.csv").write_text("user,item,rating\n1,2,5\n1,3,oops\n")
    config = cluster_config()
    config["datasets"] = {"my-data": {"path": str(tmp_path / "bad.csv"), "format": "csv"}}
    r = run_on_slurm(tmp_path, config)
    out = r.stdout + r.stderr
    assert r.returncode not in (0, 137), out[-3000:]
    assert "Error in rule prepare_data" in out
    logs = re.findall(r"\S*/\.snakemake/slurm_logs/rule_prepare_data/my-data/(\d+)\.log", out)
    assert logs, out[-3000:]
    assert set(sacct(logs).values()) == {("FAILED", "1:0")}
    for slurm_id in logs:
        log = tmp_path / f".snakemake/slurm_logs/rule_prepare_data/my-data/{slurm_id}.log"
        assert "rating 'oops' is not a number" in log.read_text()  # the job's own error
