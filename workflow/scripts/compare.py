from adapter import log, run

import numpy as np
import pandas as pd

from ract.errors import RactError
from ract.formats import PAPER_METRICS
from ract.io import write_csv, write_json, write_text
from ract.report import (
    aggregate_table,
    check_same_data,
    comparison_document,
    failures,
    gain_by_activity,
    html_document,
    markdown_document,
    metrics_table,
    plot_critic_fit,
    plot_gain_by_activity,
    plot_metric_bars,
    plot_training_curves,
    read_history,
    read_summary,
)
from ract.stats import paired_test_over_seeds

CRITIC = {
    "critic_r_train": "critic r (training batches)",
    "val_critic_r": "critic r (validation users)",
    "val_nll_r": "NLL r (validation users)",
    "val_nll_slope_negative": "share of users with d critic/d NLL < 0",
}


def per_user_ndcg(paths, runs):
    """{model name: [per-user test NDCG@100 of each seed]}: the same users in the same order in
    every table (they come from one split), which the per-user averaging over seeds relies
    on."""
    frames = [pd.read_csv(path, dtype={"user": str}) for path in paths]
    for path, frame in zip(paths[1:], frames[1:]):
        if not frame["user"].equals(frames[0]["user"]):
            raise RactError(
                f"{path}: its test users differ from those of {paths[0]}; the "
                "paired test needs every model evaluated on the same split"
            )
    by_model = {}
    for (model, _seed), frame in zip(runs, frames):
        by_model.setdefault(model, []).append(frame["ndcg@100"].to_numpy())
    return by_model, frames[0]


def main():
    p = snakemake.params
    summaries = [
        read_summary(path, model=model, seed=seed, variant="main")
        for path, (seed, model) in zip(snakemake.input.summaries, p.summaries)
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
    write_csv(snakemake.output.csv, table)
    aggregate = aggregate_table(table, PAPER_METRICS)

    by_seed = {}
    for path, seed in zip(snakemake.input.histories, p.histories):
        by_seed.setdefault(seed, []).append(path)
    histories = {seed: read_history(paths) for seed, paths in by_seed.items()}
    controls = {
        seed: read_history([path]) for seed, path in zip(p.controls, snakemake.input.controls)
    }
    critic_rows = []
    for seed, h in histories.items():
        critic = h[h["stage"] == "critic_pretrain"]
        validated = critic.dropna(subset=["val_critic_r"])
        if "kept" in critic:  # the epoch its checkpoint holds
            kept = critic[critic["kept"].astype(bool)].iloc[-1]
        else:  # a history written before `kept` existed: the critic stage kept its last epoch
            kept = critic.iloc[-1]
        best = (
            f"{validated['val_critic_r'].max():.3f} "
            f"({int(validated.loc[validated['val_critic_r'].idxmax(), 'epoch'])})"
            if len(validated)
            else "n/a"
        )
        critic_rows.append(
            {
                "seed": seed,
                "critic steps": int(critic["steps"].iloc[-1]),
                "kept epoch": int(kept["epoch"]),
                "best r (epoch)": best,
                **{label: kept[col] for col, label in CRITIC.items()},
            }
        )
    fits = {
        seed: pd.read_csv(path) for seed, path in zip(p.critic_seeds, snakemake.input.critic_fits)
    }
    # the pooled r of the figure's titles, so that table and figure cannot disagree
    fit_r = plot_critic_fit(fits, snakemake.output.critic, snakemake.output.critic_pdf)

    # Does the critic help? Each pair on the same test users, per user (a user's NDCG@100
    # averaged over seeds first: users, not seeds, are the independent samples).
    ndcg, users = per_user_ndcg(snakemake.input.paired, p.paired)
    tests = [
        {
            "metric": "ndcg@100",
            "split": "test",
            "a": a,
            "b": b,
            **paired_test_over_seeds(ndcg[a], ndcg[b]),
        }
        for a, b in p.pairs
    ]
    write_json(snakemake.output.significance, {"tests": tests})
    first = tests[0]
    mean_a, mean_b = (np.nanmean(ndcg[first[k]], axis=0) for k in ("a", "b"))
    groups = gain_by_activity(users["n_input"] + users["n_holdout"], mean_a, mean_b)
    plot_gain_by_activity(
        groups,
        snakemake.output.gain,
        snakemake.output.gain_pdf,
        label=f"{first['b']} - {first['a']}",
    )

    doc = comparison_document(
        table,
        aggregate,
        tests,
        metrics=PAPER_METRICS,
        starts=p.starts,
        failed=failed,
        groups=groups,
        critic=pd.DataFrame(critic_rows),
        fit_r=fit_r,
        paper=p.paper,
    )
    write_text(snakemake.output.md, markdown_document(doc))
    write_text(
        snakemake.output.html,
        html_document(doc, f"{snakemake.wildcards.dataset}: the models compared"),
    )
    plot_training_curves(
        histories, snakemake.output.curves, snakemake.output.curves_pdf, controls=controls
    )
    plot_metric_bars(
        aggregate,
        snakemake.output.bars,
        snakemake.output.bars_pdf,
        split="test",
        metrics=PAPER_METRICS,
    )


run(snakemake, main)
