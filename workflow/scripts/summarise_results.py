import json
import re

import pandas as pd
from adapter import run

from ract.io import write_csv, write_text

MODEL = {"actor_pretrain": "Mult-VAE", "finetune": "RaCT"}


def main():
    rows = []
    for path in snakemake.input.summaries:
        s = json.load(open(path))
        seed = int(re.search(r"/seed(\d+)/", path).group(1))
        row = {"model": MODEL[s["stage"]], "stage": s["stage"], "seed": seed, "split": s["split"],
               "epoch": s["epoch"], "users": s["n_users_evaluated"]}
        for key in ("recall@20", "recall@50", "ndcg@100"):
            row[key] = s["metrics"][key]["mean"]
            row[f"{key}_se"] = s["metrics"][key]["se"]
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["split", "stage", "seed"]).reset_index(drop=True)
    critic = []
    for path in snakemake.input.critic_histories:
        last = pd.read_csv(path).iloc[-1]
        critic.append({"seed": int(re.search(r"/seed(\d+)/", path).group(1)),
                       "critic_steps": int(last["steps"]),
                       "critic_r_train": last["critic_r_train"],
                       "critic_r_validation": last["val_critic_r"],
                       "nll_r_validation": last["val_nll_r"],
                       "nll_slope_negative": last["val_nll_slope_negative"]})
    table = table.merge(pd.DataFrame(critic), on="seed", how="left")
    write_csv(snakemake.output.csv, table)
    shown = table[["split", "model", "seed", "epoch", "recall@20", "recall@50", "ndcg@100"]]
    mean = (shown.groupby(["split", "model"], as_index=False)[["recall@20", "recall@50",
                                                              "ndcg@100"]].mean())
    mean["seed"], mean["epoch"] = "mean", ""
    md = ["| split | model | seed | epoch | Recall@20 | Recall@50 | NDCG@100 |",
          "|---|---|---|---|---|---|---|"]
    for r in pd.concat([shown, mean[shown.columns]]).itertuples(index=False):
        md.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.4f} | {r[5]:.4f} | "
                  f"{r[6]:.4f} |")
    md += ["", "| seed | critic steps | critic r (train batches) | critic r (validation) | "
           "NLL r (validation) | share of users with d critic / d NLL < 0 |",
           "|---|---|---|---|---|---|"]
    for c in critic:
        md.append(f"| {c['seed']} | {c['critic_steps']} | {c['critic_r_train']:.3f} | "
                  f"{c['critic_r_validation']:.3f} | {c['nll_r_validation']:.3f} | "
                  f"{c['nll_slope_negative']:.3f} |")
    write_text(snakemake.output.md, "\n".join(md) + "\n")


run(snakemake, main)
