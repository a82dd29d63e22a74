import json
import logging
import os
import traceback

from adapter import log, run  # the standard library and `ract`'s own light modules only

from ract.errors import RactError, error_line
from ract.formats import PAPER_METRICS

# Each of the two processes computes on one thread, as the job did alone with `threads: 1`:
# the counts Snakemake set from the rule's 2 threads, set back before numpy and torch load
# (spare threads of both processes would only contend for the same 2 cores).
for _variable in (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_variable] = "1"

# Two processes share the work, on the 2 threads the rule claims: a fork of this one, made
# before anything heavy is imported (numpy starts threads, which a fork does not copy), draws
# the critic's fit, the test metrics and the training curves; this one imports scipy for the
# paired tests (0.6 s), draws the gain by user activity, and writes the tables and the page.
# Each reads the (small) inputs it needs itself. Alone, the job took 4.3 s on ml-100k: 2.0 s
# of imports, 1.9 s of figures; split so, 2.1-2.6 s, the fork's part the longer.


def files_of(kind):
    """(path, what it is) of every input of one kind, in the rule's order: the `files` param
    says what each input is, by its name (`comparison_files` in workflow/rules/common.smk)."""
    return [
        (snakemake.input[name], about)
        for name, about in snakemake.params.files.items()
        if about["kind"] == kind
    ]


def main():
    critic_fit = Beside(draw_critic_fit_metrics_and_curves)
    try:
        compare(critic_fit)
    finally:
        critic_fit.wait()  # ended before this job ends, however it ends


def read_tables():
    """The evaluation summaries, their table per seed and the aggregate over seeds."""
    from ract.report import aggregate_table, metrics_table, read_summary

    summaries = [
        read_summary(path, model=about["model"], seed=about["seed"], variant="main")
        for path, about in files_of("summary")
    ]
    table = metrics_table(summaries)
    return summaries, table, aggregate_table(table, PAPER_METRICS)


def draw_critic_fit_metrics_and_curves():
    """The forked process's part; returns the critic fit's pooled r."""
    import pandas as pd

    from ract.report import plot_critic_fit, plot_metric_bars, plot_training_curves

    out = snakemake.output
    fits = {about["seed"]: pd.read_csv(path) for path, about in files_of("critic_fit")}
    # the pooled r of the figure's titles, so that table and figure cannot disagree
    fit_r = plot_critic_fit(fits, out.critic, out.critic_pdf)
    aggregate = read_tables()[2]
    plot_metric_bars(aggregate, out.bars, out.bars_pdf, split="test", metrics=PAPER_METRICS)
    controls = histories_of("control")
    plot_training_curves(histories_of("history"), out.curves, out.curves_pdf, controls=controls)
    return fit_r


def histories_of(kind):
    """The training histories of one kind of input: `history` (RaCT's stages) or `control`
    (the likelihood finetune), by seed."""
    from ract.report import read_histories

    return read_histories((about["seed"], path) for path, about in files_of(kind))


def compare(critic_fit):
    """This process's part: the tables, the paired tests and the gain figure, and the page,
    once the forked process gives the critic's fit (`critic_fit.result()`)."""
    from ract.io import write_csv, write_json, write_text
    from ract.report import Comparison, check_same_data, comparison_document, critic_table
    from ract.report import failures, gain_of_test, html_document, markdown_document
    from ract.report import per_user_ndcg, plot_gain_by_activity
    from ract.stats import paired_tests

    p, out = snakemake.params, snakemake.output
    summaries, table, aggregate = read_tables()
    check_same_data(summaries)
    failed = failures(summaries)
    for f in failed:
        log.warning(
            "%s (seed %s, %s) is shown as failed: %s",
            f["model"],
            f["seed"],
            f["split"],
            f["error"],
        )
    write_csv(out.csv, table)
    critic = critic_table(histories_of("history"))
    # Does the critic help? Each pair on the same test users, per user (a user's NDCG@100
    # averaged over seeds first: users, not seeds, are the independent samples).
    ndcg, users = per_user_ndcg([(about["model"], path) for path, about in files_of("per_user")])
    tests = paired_tests(ndcg, p.pairs)
    write_json(out.significance, {"tests": tests})
    first = tests[0]
    groups = gain_of_test(first, ndcg, users)
    plot_gain_by_activity(groups, out.gain, out.gain_pdf, label=f"{first['b']} - {first['a']}")

    study = Comparison(table, aggregate, tests, failed, groups, critic, critic_fit.result())
    doc = comparison_document(study, metrics=PAPER_METRICS, starts=p.starts, paper=p.paper)
    write_text(out.md, markdown_document(doc))
    title = f"{snakemake.wildcards.dataset}: the models compared"
    write_text(out.html, html_document(doc, title))


class Beside:
    """`work()` run in a forked copy of this process, beside what this one does next."""

    def __init__(self, work):
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the copy: run, answer, and leave without this process's exit
            code = 1
            try:
                os.close(read)
                with os.fdopen(write, "w") as pipe:
                    pipe.write(answer(work))
                logging.shutdown()
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.pipe, self.ended = os.fdopen(read), None

    def wait(self):
        """Wait for the copy to end (once): (its answer, its exit status)."""
        if self.ended is None:
            with self.pipe:
                self.ended = self.pipe.read(), os.waitpid(self.pid, 0)[1]
        return self.ended

    def result(self):
        """What `work()` returned (through JSON), or a RactError saying what it raised as the
        job's error line would have."""
        text, status = self.wait()
        if status or not text:
            code = os.waitstatus_to_exitcode(status)
            raise RuntimeError(f"the forked process (pid {self.pid}) ended with status {code}")
        outcome = json.loads(text)
        if "error" in outcome:
            raise RactError(outcome["error"])
        return outcome["value"]


def answer(work):
    """`work()`'s outcome as JSON: {"value": what it returned}, or {"error": the one line that
    says what it raised (`ract.errors.error_line`)}, an unexpected error's traceback logged."""
    try:
        return json.dumps({"value": work()})
    except Exception as exc:  # noqa: BLE001 - each goes back to the parent
        line = error_line(exc, f"full traceback in {snakemake.log[0]}")
        if not isinstance(exc, RactError):
            log.info("the forked process failed:\n%s", traceback.format_exc().rstrip())
        return json.dumps({"error": line.removeprefix("ract: error: ")})


run(snakemake, main)
