from adapter import log, run

import numpy as np
import pandas as pd

from ract.errors import RactError
from ract.io import write_csv, write_json, write_text
from ract.paper import CRITIC_CORRELATION, paper_comparison, paper_markdown
from ract.report import (aggregate_table, check_same_data, failures, gain_by_activity,
                         markdown_table, metrics_table, plot_critic_fit,
                         plot_gain_by_activity, plot_metric_bars, plot_training_curves,
                         read_history, read_summary)
from ract.stats import paired_test_over_seeds

SHOWN = ["recall@20", "recall@50", "ndcg@100"]
CRITIC = {"critic_r_train": "critic r (training batches)",
          "val_critic_r": "critic r (validation users)",
          "val_nll_r": "NLL r (validation users)",
          "val_nll_slope_negative": "share of users with d critic/d NLL < 0"}


def per_user_ndcg(paths, runs):
    """{model name: [per-user test NDCG@100 of each seed]}: the same users in the same order in
    every table (they come from one split), which the per-user averaging over seeds relies
    on."""
    frames = [pd.read_csv(path, dtype={"user": str}) for path in paths]
    for path, frame in zip(paths[1:], frames[1:]):
        if not frame["user"].equals(frames[0]["user"]):
            raise RactError(f"{path}: its test users differ from those of {paths[0]}; the "
                            "paired test needs every model evaluated on the same split")
    by_model = {}
    for (model, _seed), frame in zip(runs, frames):
        by_model.setdefault(model, []).append(frame["ndcg@100"].to_numpy())
    return by_model, frames[0]


def signed(x: float) -> str:
    """+0.0012, or +3.1e-05 where four decimals would print a nonzero difference as 0."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 5e-5 else f"{x:+.1e}"


def verdict_line(test):
    """One sentence: the difference, its intervals, both p-values and the verdict in words."""
    a, b = test["a"], test["b"]
    words = {"better": f"{b} better than {a}", "worse": f"{b} worse than {a}",
             "no detectable difference": "no detectable difference"}[test["verdict"]]
    return (f"- **{b} − {a}**, test NDCG@100 per user ({test['n']} users, averaged over "
            f"seeds): mean difference {signed(test['mean_diff'])}, 95% paired bootstrap interval "
            f"{signed(test['boot_low'])} to {signed(test['boot_high'])} (t interval "
            f"{signed(test['ci95_low'])} to {signed(test['ci95_high'])}); Cohen's d_z "
            f"{test['effect_size_dz']:+.3f}; {test['wins']} users better / {test['losses']} "
            f"worse / {test['ties']} tied; Wilcoxon signed-rank p = "
            f"{test['wilcoxon_pvalue']:.3g} (ties split), paired t-test p = "
            f"{test['t_pvalue']:.3g}. Verdict: **{words}**.")


def kept_pretrained(table, starts):
    """Sentences for each finetuned model (`starts`: its name -> its starting model's) that
    kept epoch 0 for every seed: its numbers are then the starting actor's, not a result of
    finetuning."""
    lines = []
    for model, start in starts.items():
        rows = table[(table["model"] == model) & (table["status"] == "ok")]
        if len(rows) and (rows["epoch"] == 0).all():
            lines.append(f"- {model} is {start}: on validation users no finetune epoch beat the "
                         f"pretrained actor for any seed, so every seed kept epoch 0, the "
                         f"{start} checkpoint itself.")
    return lines


def main():
    p = snakemake.params
    summaries = [read_summary(path, model=model, seed=seed, variant="main")
                 for path, (seed, model) in zip(snakemake.input.summaries, p.summaries)]
    check_same_data(summaries)
    failed = failures(summaries)
    for f in failed:
        log.warning("%s (seed %s, %s) is shown as failed: %s", f["model"], f["seed"], f["split"],
                    f["error"])
    table = metrics_table(summaries)
    write_csv(snakemake.output.csv, table)
    aggregate = aggregate_table(table, SHOWN)

    by_seed = {}
    for path, seed in zip(snakemake.input.histories, p.histories):
        by_seed.setdefault(seed, []).append(path)
    histories = {seed: read_history(paths) for seed, paths in by_seed.items()}
    controls = {seed: read_history([path])
                for seed, path in zip(p.controls, snakemake.input.controls)}
    critic_rows = []
    for seed, h in histories.items():
        critic = h[h["stage"] == "critic_pretrain"]
        validated = critic.dropna(subset=["val_critic_r"])
        if "kept" in critic:  # the epoch its checkpoint holds
            kept = critic[critic["kept"].astype(bool)].iloc[-1]
        else:  # a history written before `kept` existed: the critic stage kept its last epoch
            kept = critic.iloc[-1]
        best = (f"{validated['val_critic_r'].max():.3f} "
                f"({int(validated.loc[validated['val_critic_r'].idxmax(), 'epoch'])})"
                if len(validated) else "n/a")
        critic_rows.append({"seed": seed, "critic steps": int(critic["steps"].iloc[-1]),
                            "kept epoch": int(kept["epoch"]), "best r (epoch)": best,
                            **{label: kept[col] for col, label in CRITIC.items()}})
    fits = {seed: pd.read_csv(path) for seed, path in zip(p.critic_seeds,
                                                           snakemake.input.critic_fits)}
    # the pooled r of the figure's titles, so that table and figure cannot disagree
    fit_r = plot_critic_fit(fits, snakemake.output.critic, snakemake.output.critic_pdf)

    # Does the critic help? Each pair on the same test users, per user (a user's NDCG@100
    # averaged over seeds first: users, not seeds, are the independent samples).
    ndcg, users = per_user_ndcg(snakemake.input.paired, p.paired)
    tests = [{"metric": "ndcg@100", "split": "test", "a": a, "b": b,
              **paired_test_over_seeds(ndcg[a], ndcg[b])} for a, b in p.pairs]
    write_json(snakemake.output.significance, {"tests": tests})
    first = tests[0]
    mean_a, mean_b = (np.nanmean(ndcg[first[k]], axis=0) for k in ("a", "b"))
    groups = gain_by_activity(users["n_input"] + users["n_holdout"], mean_a, mean_b)
    plot_gain_by_activity(groups, snakemake.output.gain, snakemake.output.gain_pdf,
                          label=f"{first['b']} - {first['a']}")

    cells = aggregate.copy()
    for m in SHOWN:
        cells[m] = [("failed" if seeds == 0 else "n/a") if pd.isna(a) else
                    f"{a:.4f} ± {b:.4f}" if pd.notna(b) else
                    f"{a:.4f} ± {u:.4f}†" if pd.notna(u) else f"{a:.4f}"
                    for a, b, u, seeds in zip(aggregate[m], aggregate[f"{m}_se"],
                                              aggregate[f"{m}_user_se"], aggregate["seeds"])]
    text = ["Mean over seeds ± standard error across seeds; † one seed (or a deterministic "
            "model): ± is the standard error over users.", "",
            markdown_table(cells, ["split", "model", "seeds", "failed", *SHOWN]), "",
            "Does the critic help? Paired tests on test users; the verdict is read from the "
            "95% paired bootstrap interval of the mean difference (10,000 resamples of users), "
            "never from a p-value alone. RaCT against the NLL finetune control is the critic's "
            "own contribution: both continue the same Mult-VAE with the same schedule, "
            "batches, dropout masks and noise, one on the critic's score, one on the "
            "likelihood.", "", *[verdict_line(t) for t in tests], ""]
    kept = kept_pretrained(table[table["split"] == "test"], p.starts)
    if kept:
        text += [*kept, ""]
    if failed:
        text += ["Models recorded as failed (no results; fix the setting named and rerun):", "",
                 *[f"- {f['model']}, seed {f['seed']}, {f['split']}: {f['error']}"
                   for f in failed], ""]
    text += ["Per seed:", "",
             markdown_table(table, ["split", "model", "seed", "epoch", "users", "status",
                                    *SHOWN]), "",
             f"{first['b']} - {first['a']} test NDCG@100 by user activity (items known per "
             "user):", "",
             markdown_table(groups, ["group", "min_items", "max_items", "users", "mean_diff",
                                     "se"]), "",
             "Critic fit at the kept critic epoch (best: the highest validation r of any "
             "validated epoch):", "",
             markdown_table(pd.DataFrame(critic_rows), ["seed", "critic steps", "kept epoch",
                                                        "best r (epoch)", *CRITIC.values()],
                            floatfmt=".3f"), "",
             f"Over all validation users and seeds ({fit_r['users']}), Pearson r with the true "
             f"NDCG@100: critic {fit_r['critic']:+.3f}, NLL {fit_r['nll']:+.3f} (paper, ML-20M: "
             "about 0.49 and 0.05)."]
    if p.paper:
        text += ["", f"Against the paper ({p.paper}, test users; ours: mean over seeds):", "",
                 paper_markdown(paper_comparison(aggregate, p.paper))]
        if p.paper in CRITIC_CORRELATION:
            ref = CRITIC_CORRELATION[p.paper]
            text += [f"Pearson r with the true NDCG@100, ours on validation users / paper on "
                     f"test users: critic {fit_r['critic']:+.3f} / {ref['critic']:+.2f}, NLL "
                     f"{fit_r['nll']:+.3f} / {ref['nll']:+.2f}."]
    write_text(snakemake.output.md, "\n".join(text) + "\n")
    plot_training_curves(histories, snakemake.output.curves, snakemake.output.curves_pdf,
                         controls=controls)
    plot_metric_bars(aggregate, snakemake.output.bars, snakemake.output.bars_pdf, split="test",
                     metrics=SHOWN)


run(snakemake, main)
