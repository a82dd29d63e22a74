import json

import pandas as pd
from adapter import run

from ract.formats import PAPER_METRICS
from ract.io import write_csv, write_json, write_text
from ract.report import markdown_table


def swept_value(settings, section, key):
    part = settings[section] if section in ("actor", "critic") else settings["stages"][section]
    return part[key]


def main():
    p = snakemake.params
    rows = []
    for variant, info in p.variants.items():
        row = {"variant": variant}
        for section, keys in p.grid.items():
            for key in keys:
                row[f"{section}.{key}"] = json.dumps(swept_value(info["settings"], section, key))
        frames = []
        for path in info["summaries"]:
            s = json.load(open(path))
            frames.append(
                {
                    "model": p.models[s["stage"]],
                    "split": s["split"],
                    **{m: s["metrics"][m]["mean"] for m in PAPER_METRICS},
                }
            )
        means = pd.DataFrame(frames).groupby(["model", "split"])[list(PAPER_METRICS)].mean()
        row["validation ndcg@100 (RaCT)"] = means.loc[("RaCT", "validation"), "ndcg@100"]
        for m in PAPER_METRICS:
            row[f"test {m} (RaCT)"] = means.loc[("RaCT", "test"), m]
        row["validation ndcg@100 (Mult-VAE)"] = means.loc[("Mult-VAE", "validation"), "ndcg@100"]
        row["test ndcg@100 (Mult-VAE)"] = means.loc[("Mult-VAE", "test"), "ndcg@100"]
        rows.append(row)
    table = pd.DataFrame(rows)
    grid = table[table["variant"] != "main"]
    best = grid.loc[grid["validation ndcg@100 (RaCT)"].idxmax()]
    table["chosen"] = table["variant"] == best["variant"]
    write_csv(snakemake.output.csv, table)
    write_text(snakemake.output.md, markdown_table(table, list(table.columns)))
    write_json(
        snakemake.output.best,
        {
            "variant": best["variant"],
            "chosen_on": "validation ndcg@100 of RaCT, mean over seeds",
            "settings": p.variants[best["variant"]]["settings"],
            "metrics": {k: float(v) for k, v in best.items() if "(" in k},
        },
    )


run(snakemake, main)
