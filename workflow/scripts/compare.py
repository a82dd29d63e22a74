from adapter import log, run

import pandas as pd

from ract.formats import PAPER_METRICS
from ract.io import write_csv, write_json, write_text
from ract.report import (
    Comparison,
    aggregate_table,
    check_same_data,
    comparison_document,
    critic_table,
    failures,
    gain_of_test,
    html_document,
    markdown_document,
    metrics_table,
    per_user_ndcg,
    plot_critic_fit,
    plot_gain_by_activity,
    plot_metric_bars,
    plot_training_curves,
    read_histories,
    read_summary,
)
from ract.stats import paired_tests


def files_of(kind):
    """(path, what it is) of every input of one kind, in the rule's order: the `files` param
    says what each input is, by its name (`comparison_files` in workflow/rules/common.smk)."""
    return [
        (snakemake.input[name], about)
        for name, about in snakemake.params.files.items()
        if about["kind"] == kind
    ]


def main():
    p, out = snakemake.params, snakemake.output
    summaries = [
        read_summary(path, model=about["model"], seed=about["seed"], variant="main")
        for path, about in files_of("summary")
    ]
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
    table = metrics_table(summaries)
    write_csv(out.csv, table)
    aggregate = aggregate_table(table, PAPER_METRICS)

    histories = read_histories((about["seed"], path) for path, about in files_of("history"))
    controls = read_histories((about["seed"], path) for path, about in files_of("control"))
    critic = critic_table(histories)
    fits = {about["seed"]: pd.read_csv(path) for path, about in files_of("critic_fit")}
    # the pooled r of the figure's titles, so that table and figure cannot disagree
    fit_r = plot_critic_fit(fits, out.critic, out.critic_pdf)

    # Does the critic help? Each pair on the same test users, per user (a user's NDCG@100
    # averaged over seeds first: users, not seeds, are the independent samples).
    ndcg, users = per_user_ndcg([(about["model"], path) for path, about in files_of("per_user")])
    tests = paired_tests(ndcg, p.pairs)
    write_json(out.significance, {"tests": tests})
    first = tests[0]
    groups = gain_of_test(first, ndcg, users)
    plot_gain_by_activity(groups, out.gain, out.gain_pdf, label=f"{first['b']} - {first['a']}")

    study = Comparison(table, aggregate, tests, failed, groups, critic, fit_r)
    doc = comparison_document(study, metrics=PAPER_METRICS, starts=p.starts, paper=p.paper)
    write_text(out.md, markdown_document(doc))
    title = f"{snakemake.wildcards.dataset}: the models compared"
    write_text(out.html, html_document(doc, title))
    plot_training_curves(histories, out.curves, out.curves_pdf, controls=controls)
    plot_metric_bars(aggregate, out.bars, out.bars_pdf, split="test", metrics=PAPER_METRICS)


run(snakemake, main)
