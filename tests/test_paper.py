"""ract.paper: the reference numbers of SPEC section 5 and our table beside them."""

import math

import pandas as pd
import pytest

from ract.errors import RactError
from ract.paper import (
    COMPARISON_COLUMNS,
    CRITIC_CORRELATION,
    EASE_FOLLOW_UPS,
    PAPER_METRICS,
    PAPER_SIZES,
    RACT_PAPER,
    REPORTED,
    paper_comparison,
    paper_markdown,
    size_comparison,
)
from ract.report import aggregate_table


def test_reference_numbers_are_spec_section_5():
    table = {key: {r.model: r.values for r in rows} for key, rows in REPORTED.items()}
    assert table == {
        "ml-20m": {
            "RaCT": (0.403, 0.543, 0.434),
            "Mult-VAE": (0.395, 0.537, 0.426),
            "Mult-DAE": (0.387, 0.524, 0.419),
            "EASE": (0.391, 0.521, 0.420),
        },
        "netflix": {
            "RaCT": (0.357, 0.450, 0.392),
            "Mult-VAE": (0.351, 0.444, 0.386),
            "Mult-DAE": (0.344, 0.438, 0.380),
        },
        "msd": {
            "RaCT": (0.268, 0.364, 0.319),
            "Mult-VAE": (0.266, 0.364, 0.316),
            "Mult-DAE": (0.266, 0.363, 0.313),
        },
    }
    assert PAPER_METRICS == ("recall@20", "recall@50", "ndcg@100")
    assert CRITIC_CORRELATION == {"ml-20m": {"critic": 0.49, "nll": 0.05}}
    assert PAPER_SIZES["netflix"]["items"] == 17_769 and PAPER_SIZES["msd"]["users"] == 571_355
    sources = {r.model: r.source for r in REPORTED["ml-20m"]}
    assert sources["EASE"] == EASE_FOLLOW_UPS and sources["RaCT"] == RACT_PAPER


def metrics_rows(model, seed, split, values, variant="main"):
    row = {"variant": variant, "model": model, "seed": seed, "split": split}
    for m, v in zip(PAPER_METRICS, values):
        row[m], row[f"{m}_se"] = v, 0.004
    return row


@pytest.fixture
def aggregate():
    """aggregate_table of three seeds of RaCT and Mult-VAE, one EASE fit and popularity."""
    rows = []
    for seed, shift in ((1, -0.001), (2, 0.0), (3, 0.001)):
        rows.append(metrics_rows("RaCT", seed, "test", (0.405 + shift, 0.540 + shift, 0.430)))
        rows.append(metrics_rows("Mult-VAE", seed, "test", (0.395, 0.537, 0.426 + shift)))
        rows.append(metrics_rows("RaCT", seed, "validation", (0.5, 0.6, 0.5)))
    rows.append(metrics_rows("EASE", 0, "test", (0.391, 0.521, 0.421)))
    rows.append(metrics_rows("Popularity", 0, "test", (0.1, 0.2, 0.15)))
    rows.append(metrics_rows("RaCT", 1, "test", (0.9, 0.9, 0.9), variant="sweep-0123abcd"))
    return aggregate_table(pd.DataFrame(rows), PAPER_METRICS)


def test_comparison_rows_values_and_differences(aggregate):
    out = paper_comparison(aggregate, "ml-20m")
    assert list(out.columns) == list(COMPARISON_COLUMNS)
    # the paper's model order, models we did not run (Mult-DAE) and did not report left out
    assert list(dict.fromkeys(out["model"])) == ["RaCT", "Mult-VAE", "EASE"]
    assert list(out["metric"][:3]) == list(PAPER_METRICS)
    ract = out[out["model"] == "RaCT"].set_index("metric")
    assert ract.loc["recall@20", "ours"] == pytest.approx(0.405)  # sweep variant ignored
    assert ract.loc["recall@20", "paper"] == 0.403
    assert ract.loc["recall@20", "difference"] == pytest.approx(0.002)
    assert ract.loc["recall@20", "ours_se"] == pytest.approx(0.001 / math.sqrt(3))
    assert ract.loc["ndcg@100", "seeds"] == 3
    ease = out[out["model"] == "EASE"].set_index("metric")
    assert math.isnan(ease.loc["ndcg@100", "ours_se"])  # one fit: no spread across seeds
    assert ease.loc["ndcg@100", "difference"] == pytest.approx(0.001)
    assert "Steck" in ease.loc["ndcg@100", "source"]
    assert set(out[out["model"] != "EASE"]["source"]) == {"Lobel et al. (ICLR 2020)"}


def test_comparison_other_data_set_split_and_metrics(aggregate):
    out = paper_comparison(aggregate, "msd", metrics=["ndcg@100"])
    assert list(out["model"]) == ["RaCT", "Mult-VAE"]  # the paper has no EASE row on MSD
    assert list(out["paper"]) == [0.319, 0.316]
    valid = paper_comparison(aggregate, "netflix", split="validation")
    assert list(valid["ours"]) == [0.5, 0.6, 0.5]


def test_failed_model_shows_no_difference(aggregate):
    aggregate.loc[aggregate["model"] == "EASE", "ndcg@100"] = math.nan
    out = paper_comparison(aggregate, "ml-20m").set_index(["model", "metric"])
    assert math.isnan(out.loc[("EASE", "ndcg@100"), "difference"])
    assert "n/a" in paper_markdown(out.reset_index())


def test_markdown(aggregate):
    text = paper_markdown(paper_comparison(aggregate, "ml-20m"))
    lines = text.splitlines()
    assert lines[0].startswith(
        "| model | seeds | recall@20 ours | recall@20 paper | recall@20 diff"
    )
    ract = next(line for line in lines if line.startswith("| RaCT |"))
    assert "| 0.405 ± 0.001 | 0.403 | +0.002 |" in ract
    ease = next(line for line in lines if line.startswith("| EASE |"))
    assert "| 0.391 | 0.391 | +0.000 |" in ease  # no ± with one fit
    assert "Steck (2019)" in text and "Lobel et al. (ICLR 2020)" in text
    assert text.endswith("\n")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: paper_comparison(a, "ml-1m"), "paper data set 'ml-1m': expected one of ml-20m"),
        (
            lambda a: paper_comparison(a, "ml-20m", split="train"),
            "no rows for split 'train' and variant 'main'",
        ),
        (lambda a: paper_comparison(a, "ml-20m", metrics=["mrr@10"]), "metric(s) ['mrr@10']"),
        (
            lambda a: paper_comparison(a.drop(columns="ndcg@100"), "ml-20m"),
            "our table has no column(s) ['ndcg@100']",
        ),
        (
            lambda a: paper_comparison(a[a["model"] == "Popularity"], "netflix"),
            "none of the paper's models on netflix (RaCT, Mult-VAE, Mult-DAE) is in our table "
            "(models: Popularity)",
        ),
        (lambda a: paper_comparison(pd.concat([a, a]), "ml-20m"), "more than one row for model"),
        (lambda a: paper_markdown(pd.DataFrame({"model": []})), "paper table: no column(s)"),
    ],
)
def test_bad_input_is_named(aggregate, call, message):
    with pytest.raises(RactError) as info:
        call(aggregate)
    assert message in str(info.value)


def test_size_comparison():
    manifest = {"n_users": 136_677, "n_items": 20_000, "n_interactions_kept": 10_000_000}
    out = size_comparison(manifest, "ml-20m").set_index("quantity")
    assert out.loc["users", "ratio"] == 1.0 and out.loc["items", "paper"] == 20_108
    assert out.loc["interactions", "ratio"] == pytest.approx(1.0)
    with pytest.raises(RactError, match="the manifest has no 'n_interactions_kept'"):
        size_comparison({"n_users": 1, "n_items": 1}, "msd")
