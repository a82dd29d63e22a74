"""The paper's reported numbers (SPEC section 5) and our results beside them.

RaCT, Mult-VAE and Mult-DAE come from the RaCT paper's main results table (Lobel, Li, Gao and
Carin, ICLR 2020: strong generalisation, test users); EASE (Steck, 2019) on ML-20M from the
published follow-ups that compare with it. Keys are the paper's data sets, the values a config's
`datasets.<name>.paper` takes; model names are the display names the workflow gives its models
("RaCT", "Mult-VAE", "Mult-DAE", "EASE"), so our comparison table joins on them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import pandas as pd

from .errors import RactError
from .formats import PAPER_METRICS

RACT_PAPER = "Lobel et al. (ICLR 2020)"
EASE_FOLLOW_UPS = "Steck (2019), as reported in follow-ups"


@dataclass(frozen=True)
class Reported:
    """One model's published numbers on one data set, in `PAPER_METRICS` order."""

    model: str
    values: tuple[float, float, float]
    source: str = RACT_PAPER


REPORTED: dict[str, tuple[Reported, ...]] = {
    "ml-20m": (
        Reported("RaCT", (0.403, 0.543, 0.434)),
        Reported("Mult-VAE", (0.395, 0.537, 0.426)),
        Reported("Mult-DAE", (0.387, 0.524, 0.419)),
        Reported("EASE", (0.391, 0.521, 0.420), EASE_FOLLOW_UPS),
    ),
    "netflix": (
        Reported("RaCT", (0.357, 0.450, 0.392)),
        Reported("Mult-VAE", (0.351, 0.444, 0.386)),
        Reported("Mult-DAE", (0.344, 0.438, 0.380)),
    ),
    "msd": (
        Reported("RaCT", (0.268, 0.364, 0.319)),
        Reported("Mult-VAE", (0.266, 0.364, 0.316)),
        Reported("Mult-DAE", (0.266, 0.363, 0.313)),
    ),
}

# Data set sizes after the paper's preprocessing; interactions are given rounded there (to
# 0.1 million), so compare them with a tolerance.
PAPER_SIZES: dict[str, dict[str, float]] = {
    "ml-20m": {"users": 136_677, "items": 20_108, "interactions": 10.0e6},
    "netflix": {"users": 463_435, "items": 17_769, "interactions": 56.9e6},
    "msd": {"users": 571_355, "items": 41_140, "interactions": 33.6e6},
}

# Pearson r with the true NDCG@100 of ML-20M test users: of the trained critic's output, and of
# the actor's NLL alone (the paper's argument that the critic learns more than the likelihood).
CRITIC_CORRELATION: dict[str, dict[str, float]] = {"ml-20m": {"critic": 0.49, "nll": 0.05}}

COMPARISON_COLUMNS = (
    "model",
    "metric",
    "seeds",
    "ours",
    "ours_se",
    "paper",
    "difference",
    "source",
)


def _reported(dataset: str) -> tuple[Reported, ...]:
    if dataset not in REPORTED:
        raise RactError(f"paper data set {dataset!r}: expected one of {', '.join(REPORTED)}")
    return REPORTED[dataset]


def paper_comparison(
    aggregate: pd.DataFrame,
    dataset: str,
    *,
    split: str = "test",
    variant: str = "main",
    metrics: Sequence[str] = PAPER_METRICS,
) -> pd.DataFrame:
    """Our numbers beside the paper's, per model and metric.

    Parameters
    ----------
    aggregate : pandas.DataFrame
        `ract.report.aggregate_table` output: columns split, model, seeds, `<metric>` and
        `<metric>_se` (variant too; then only `variant` rows are used).
    dataset : str
        The paper's data set: a key of `REPORTED` (ml-20m, netflix, msd).
    split : str
        Our split to compare; the paper reports test users.
    metrics : sequence of str
        A subset of `PAPER_METRICS`.

    Returns
    -------
    pandas.DataFrame
        `COMPARISON_COLUMNS`, one row per (model, metric) for the models both the paper and we
        report, in the paper's model order: seeds, ours (mean over seeds), ours_se (standard
        error across seeds, NaN with one seed), paper, difference (ours - paper; NaN where our
        model failed) and the paper number's source.

    Raises
    ------
    RactError
        Unknown data set or metric, missing columns or rows, or no model in common.
    """
    reported = _reported(dataset)
    metrics = list(metrics)
    rows = _our_rows(aggregate, split, variant, metrics)
    ours = rows.set_index("model")
    common = [r for r in reported if r.model in ours.index]
    if not common:
        raise RactError(
            f"paper comparison: none of the paper's models on {dataset} "
            f"({', '.join(r.model for r in reported)}) is in our table (models: "
            f"{', '.join(map(str, ours.index))})"
        )
    out = [_side_by_side(r, ours.loc[r.model], m) for r in common for m in metrics]
    return pd.DataFrame(out, columns=list(COMPARISON_COLUMNS))


def _side_by_side(reported: Reported, row: pd.Series, metric: str) -> dict:
    """One row of the comparison: our aggregate `row` of a model beside the paper's number."""
    paper = reported.values[PAPER_METRICS.index(metric)]
    value = float(row[metric]) if pd.notna(row[metric]) else math.nan
    se = row.get(f"{metric}_se", math.nan)
    return {
        "model": reported.model,
        "metric": metric,
        "seeds": int(row["seeds"]),
        "ours": value,
        "ours_se": float(se) if pd.notna(se) else math.nan,
        "paper": paper,
        "difference": value - paper,
        "source": reported.source,
    }


def _our_rows(aggregate: pd.DataFrame, split: str, variant: str, metrics: list) -> pd.DataFrame:
    """The aggregate table's rows for `split` (and `variant`), one per model, or a RactError
    naming what is missing."""
    unknown = [m for m in metrics if m not in PAPER_METRICS]
    if unknown or not metrics:
        raise RactError(
            f"paper comparison: metric(s) {unknown or metrics}: expected some of "
            f"{', '.join(PAPER_METRICS)}"
        )
    missing = [c for c in ("split", "model", "seeds", *metrics) if c not in aggregate.columns]
    if missing:
        raise RactError(
            f"paper comparison: our table has no column(s) {missing}; available: "
            f"{list(aggregate.columns)}"
        )
    rows = aggregate[aggregate["split"] == split]
    if "variant" in rows.columns:
        rows = rows[rows["variant"] == variant]
    if rows.empty:
        raise RactError(
            f"paper comparison: our table has no rows for split {split!r}"
            + (f" and variant {variant!r}" if "variant" in aggregate.columns else "")
            + f" (splits found: {sorted(aggregate['split'].unique())})"
        )
    repeated = rows["model"][rows["model"].duplicated()].unique()
    if len(repeated):
        raise RactError(
            f"paper comparison: more than one row for model {repeated[0]!r} in split {split!r}"
        )
    return rows


def paper_markdown(comparison: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table of a `paper_comparison` frame (`paper_table`), then the line naming the
    sources. Ends with a newline."""
    from .report import markdown_table  # report pulls in matplotlib; only the rendering needs it

    cells, note = paper_table(comparison, digits)
    return markdown_table(cells) + f"\n{note}\n"


def paper_table(comparison: pd.DataFrame, digits: int = 3) -> tuple[pd.DataFrame, str]:
    """The cells of a `paper_comparison` frame as text, one row per model and for each metric
    ours (± standard error across seeds when there is one), the paper's number and ours minus
    the paper's; and a sentence naming the sources."""
    missing = [c for c in COMPARISON_COLUMNS if c not in comparison.columns]
    if missing:
        raise RactError(f"paper table: no column(s) {missing}; expected a paper_comparison frame")
    if comparison.empty:
        raise RactError("paper table: the comparison is empty")

    def number(value, sign=""):
        return "n/a" if pd.isna(value) else format(float(value), f"{sign}.{digits}f")

    metrics = list(dict.fromkeys(comparison["metric"]))
    cells = []
    for model, group in comparison.groupby("model", sort=False):
        row = {"model": model, "seeds": int(group["seeds"].iloc[0])}
        for _, r in group.iterrows():
            ours = number(r["ours"])
            if pd.notna(r["ours"]) and pd.notna(r["ours_se"]):
                ours += f" ± {number(r['ours_se'])}"
            row[f"{r['metric']} ours"] = ours
            row[f"{r['metric']} paper"] = number(r["paper"])
            row[f"{r['metric']} diff"] = number(r["difference"], "+")
        cells.append(row)
    columns = ["model", "seeds"] + [
        f"{m} {kind}" for m in metrics for kind in ("ours", "paper", "diff")
    ]
    sources = "; ".join(
        f"{', '.join(dict.fromkeys(g['model']))}: {source}"
        for source, g in comparison.groupby("source", sort=False)
    )
    return (
        pd.DataFrame(cells, columns=columns),
        "Ours: mean over seeds (± standard error across seeds); diff = ours - paper. "
        f"Paper numbers (strong generalisation, test users) - {sources}.",
    )


def size_comparison(manifest: Mapping, dataset: str) -> pd.DataFrame:
    """Our prepared data set's size beside the paper's: columns quantity (users, items,
    interactions), ours, paper, ratio (ours / paper). `manifest` is a split's manifest.json
    (`ract.data.prepare.prepare_split`); a ratio far from 1 means the preprocessing or the raw
    file differs from the paper's."""
    _reported(dataset)
    keys = {"users": "n_users", "items": "n_items", "interactions": "n_interactions_kept"}
    missing = [k for k in keys.values() if k not in manifest]
    if missing:
        raise RactError(
            f"size comparison: the manifest has no {missing[0]!r}; expected a "
            "split manifest.json written by ract prepare"
        )
    paper = PAPER_SIZES[dataset]
    rows = [
        {
            "quantity": q,
            "ours": int(manifest[k]),
            "paper": paper[q],
            "ratio": int(manifest[k]) / paper[q],
        }
        for q, k in keys.items()
    ]
    return pd.DataFrame(rows, columns=["quantity", "ours", "paper", "ratio"])
