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


def paired_frames(paths):
    """Per-user test tables of Mult-VAE and RaCT, seed by seed: the same users in the same order
    (they come from one split), which the per-user averaging over seeds relies on."""
    frames = [pd.read_csv(path, dtype={"user": str}) for path in paths]
    for path, frame in zip(paths[1:], frames[1:]):
        if not frame["user"].equals(frames[0]["user"]):
            raise RactError(f"{path}: its test users differ from those of {paths[0]}; the "
                            "paired test needs every model evaluated on the same split")
    return frames[0::2], frames[1::2]


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
    critic_rows = []
    for seed, h in histories.items():
        last = h[h["stage"] == "critic_pretrain"].iloc[-1]
        critic_rows.append({"seed": seed, "critic steps": int(last["steps"]),
                            **{label: last[col] for col, label in CRITIC.items()}})
    fits = {seed: pd.read_csv(path) for seed, path in zip(p.critic_seeds,
                                                           snakemake.input.critic_fits)}
    # the pooled r of the figure's titles, so that table and figure cannot disagree
    fit_r = plot_critic_fit(fits, snakemake.output.critic, snakemake.output.critic_pdf)

    # Does the critic help? RaCT against Mult-VAE on the same test users, per user (a user's
    # NDCG@100 averaged over seeds first: users, not seeds, are the independent samples).
    vae, ract = paired_frames(snakemake.input.paired)
    vae_ndcg, ract_ndcg = ([f["ndcg@100"].to_numpy() for f in frames] for frames in (vae, ract))
    test = paired_test_over_seeds(vae_ndcg, ract_ndcg)
    test = {"metric": "ndcg@100", "split": "test", "a": "Mult-VAE", "b": "RaCT", **test}
    write_json(snakemake.output.significance, test)
    verdict = "significant" if test["wilcoxon_pvalue"] < 0.05 else "not significant"
    mean_a, mean_b = np.nanmean(vae_ndcg, axis=0), np.nanmean(ract_ndcg, axis=0)
    groups = gain_by_activity(vae[0]["n_input"] + vae[0]["n_holdout"], mean_a, mean_b)
    plot_gain_by_activity(groups, snakemake.output.gain, snakemake.output.gain_pdf)

    cells = aggregate.copy()
    for m in SHOWN:
        cells[m] = [("failed" if seeds == 0 else "n/a") if pd.isna(a) else
                    f"{a:.4f} ± {b:.4f}" if pd.notna(b) else f"{a:.4f}"
                    for a, b, seeds in zip(aggregate[m], aggregate[f"{m}_se"], aggregate["seeds"])]
    text = ["Mean over seeds ± standard error across seeds:", "",
            markdown_table(cells, ["split", "model", "seeds", "failed", *SHOWN]), ""]
    if failed:
        text += ["Models recorded as failed (no results; fix the setting named and rerun):", "",
                 *[f"- {f['model']}, seed {f['seed']}, {f['split']}: {f['error']}"
                   for f in failed], ""]
    text += ["Per seed:", "",
             markdown_table(table, ["split", "model", "seed", "epoch", "users", "status",
                                    *SHOWN]), "",
             f"RaCT - Mult-VAE, test NDCG@100 per user ({test['n']} users, averaged over "
             f"seeds): mean difference {test['mean_diff']:+.4f} (95% CI {test['ci95_low']:+.4f}"
             f" to {test['ci95_high']:+.4f}), Cohen's d_z {test['effect_size_dz']:+.3f}, "
             f"{test['wins']} users better / {test['losses']} worse / {test['ties']} tied; "
             f"Wilcoxon signed-rank p = {test['wilcoxon_pvalue']:.3g}, paired t-test p = "
             f"{test['t_pvalue']:.3g}: {verdict} at the 5% level.", "",
             "RaCT - Mult-VAE test NDCG@100 by user activity (items known per user):", "",
             markdown_table(groups, ["group", "min_items", "max_items", "users", "mean_diff",
                                     "se"]), "",
             "Critic fit at the end of critic pretraining:", "",
             markdown_table(pd.DataFrame(critic_rows), ["seed", "critic steps",
                                                        *CRITIC.values()], floatfmt=".3f"), "",
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
    plot_training_curves(histories, snakemake.output.curves, snakemake.output.curves_pdf)
    plot_metric_bars(aggregate, snakemake.output.bars, snakemake.output.bars_pdf, split="test",
                     metrics=SHOWN)


run(snakemake, main)
