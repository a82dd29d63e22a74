import json
import math

import numpy as np
import pandas as pd
import pytest

from ract import report
from ract.errors import RactError
from ract.correlation import pearson


def summary(model, seed, split="test", variant="main", recall=0.3, ndcg=0.4, epoch=5):
    return {
        "split": split,
        "n_users": 10,
        "n_users_evaluated": 9,
        "n_users_without_holdout": 1,
        "metrics": {
            "recall@20": {"mean": recall, "se": 0.01, "n_users": 9},
            "ndcg@100": {"mean": ndcg, "se": 0.02, "n_users": 9},
        },
        "checkpoint": f"{model}.pt",
        "stage": "finetune",
        "epoch": epoch,
        "model": model,
        "seed": seed,
        "variant": variant,
    }


@pytest.fixture
def summaries():
    # RaCT recall over seeds: 0.2, 0.4, 0.6 -> mean 0.4, std 0.2, se 0.2/sqrt(3)
    return [
        summary("RaCT", 3, recall=0.6, ndcg=0.5),
        summary("Mult-VAE", 1, recall=0.3),
        summary("RaCT", 1, recall=0.2, ndcg=0.5),
        summary("RaCT", 2, recall=0.4, ndcg=0.5),
        summary("Mult-VAE", 1, split="validation", recall=0.35),
    ]


def history(seed, n_actor=6, n_critic=10, n_finetune=4):
    rng = np.random.default_rng(seed)
    parts = []
    for stage, n in (
        ("actor_pretrain", n_actor),
        ("critic_pretrain", n_critic),
        ("finetune", n_finetune),
    ):
        epochs = np.arange(n + 1)
        ndcg = (
            0.1 + 0.3 * epochs / n
            if stage == "actor_pretrain"
            else 0.4 + rng.normal(0, 0.005, n + 1)
        )
        r = np.full(n + 1, np.nan) if stage == "actor_pretrain" else rng.uniform(0, 0.6, n + 1)
        parts.append(
            pd.DataFrame(
                {"stage": stage, "epoch": epochs, "val_ndcg@100": ndcg, "val_critic_r": r}
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_metrics_table_rows_columns_and_order(summaries):
    table = report.metrics_table(summaries)
    assert list(table.columns) == [
        "variant",
        "model",
        "seed",
        "split",
        "epoch",
        "users",
        "status",
        "recall@20",
        "recall@20_se",
        "ndcg@100",
        "ndcg@100_se",
    ]
    assert list(zip(table["split"], table["model"], table["seed"])) == [
        ("test", "Mult-VAE", 1),
        ("test", "RaCT", 1),
        ("test", "RaCT", 2),
        ("test", "RaCT", 3),
        ("validation", "Mult-VAE", 1),
    ]
    assert table["users"].tolist() == [9] * 5
    assert table.loc[3, "recall@20"] == 0.6
    assert table.loc[3, "recall@20_se"] == 0.01


def test_metrics_table_missing_metric_is_nan(summaries):
    extra = summary("Other", 1)
    extra["metrics"]["mrr@20"] = {"mean": 0.7, "se": 0.1, "n_users": 9}
    table = report.metrics_table(summaries + [extra])
    assert "mrr@20" in table.columns and "mrr@20_se" in table.columns
    assert table["mrr@20"].notna().sum() == 1


def test_aggregate_mean_and_se(summaries):
    agg = report.aggregate_table(
        report.metrics_table(summaries), metrics=("recall@20", "ndcg@100")
    )
    assert list(agg.columns) == [
        "variant",
        "split",
        "model",
        "seeds",
        "failed",
        "recall@20",
        "recall@20_se",
        "recall@20_user_se",
        "ndcg@100",
        "ndcg@100_se",
        "ndcg@100_user_se",
    ]
    assert len(agg) == 3
    ract = agg[(agg["model"] == "RaCT") & (agg["split"] == "test")].iloc[0]
    assert ract["seeds"] == 3
    assert ract["recall@20"] == pytest.approx(0.4)
    assert ract["recall@20_se"] == pytest.approx(0.2 / math.sqrt(3))
    assert ract["ndcg@100_se"] == pytest.approx(0.0)
    assert ract["recall@20_user_se"] == pytest.approx(0.01)
    single = agg[(agg["model"] == "Mult-VAE") & (agg["split"] == "test")].iloc[0]
    assert single["seeds"] == 1 and single["recall@20"] == pytest.approx(0.3)
    assert math.isnan(single["recall@20_se"])


def test_aggregate_unknown_metric(summaries):
    with pytest.raises(RactError, match="recall@50"):
        report.aggregate_table(report.metrics_table(summaries))  # default metrics include it


def test_markdown_table(summaries):
    table = report.metrics_table(summaries)
    table.loc[0, "model"] = "a|b"
    text = report.markdown_table(table, ["model", "seed", "recall@20", "recall@20_se"])
    lines = text.strip().split("\n")
    assert lines[0] == "| model | seed | recall@20 | recall@20_se |"
    assert lines[1] == "|:---|---:|---:|---:|"
    assert len(lines) == 2 + len(table)
    assert lines[2] == "| a\\|b | 1 | 0.3000 | 0.0100 |"
    agg = report.aggregate_table(table, metrics=("recall@20",))
    assert "n/a" in report.markdown_table(agg, ["model", "recall@20_se"], floatfmt=".2f")
    with pytest.raises(RactError, match="nope"):
        report.markdown_table(table, ["nope"])


def test_read_summary(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {k: v for k, v in summary("x", 0).items() if k not in ("model", "seed", "variant")}
        )
    )
    loaded = report.read_summary(path, model="RaCT", seed=2, variant="main")
    assert (loaded["model"], loaded["seed"], loaded["variant"]) == ("RaCT", 2, "main")
    with pytest.raises(RactError, match="not found"):
        report.read_summary(tmp_path / "missing.json", model="m", seed=1, variant="v")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RactError, match="JSON"):
        report.read_summary(tmp_path / "bad.json", model="m", seed=1, variant="v")


def assert_figure(path, magic):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes().startswith(magic)
    assert not list(path.parent.glob(".*.tmp"))


def test_plot_training_curves(tmp_path):
    report.plot_training_curves(
        {1: history(1), 2: history(2)}, tmp_path / "c.png", tmp_path / "c.pdf"
    )
    assert_figure(tmp_path / "c.png", b"\x89PNG")
    assert_figure(tmp_path / "c.pdf", b"%PDF")


def test_plot_training_curves_draws_the_control_dotted(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    dotted, plot = [], Axes.plot

    def spy(self, *args, **kwargs):
        if kwargs.get("ls") == ":":
            dotted.append(kwargs.get("label"))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    control = history(1)
    control = control[control["stage"] == "finetune"]
    report.plot_training_curves(
        {1: history(1), 2: history(2)}, tmp_path / "c.png", controls={1: control}
    )
    assert dotted == ["seed 1, NLL control"]
    assert_figure(tmp_path / "c.png", b"\x89PNG")


def test_plot_training_curves_partial_stages(tmp_path):
    actor_only = history(1)
    actor_only = actor_only[actor_only["stage"] == "actor_pretrain"].drop(columns="val_critic_r")
    report.plot_training_curves({1: actor_only}, tmp_path / "a.png")
    assert_figure(tmp_path / "a.png", b"\x89PNG")


def test_plot_metric_bars(tmp_path, summaries):
    agg = report.aggregate_table(
        report.metrics_table(summaries), metrics=("recall@20", "ndcg@100")
    )
    report.plot_metric_bars(agg, tmp_path / "b.png", tmp_path / "b.pdf")
    assert_figure(tmp_path / "b.png", b"\x89PNG")
    assert_figure(tmp_path / "b.pdf", b"%PDF")
    report.plot_metric_bars(agg, tmp_path / "v.png", split="validation")  # one seed only
    assert_figure(tmp_path / "v.png", b"\x89PNG")
    with pytest.raises(RactError, match="split 'nope'"):
        report.plot_metric_bars(agg, tmp_path / "x.png", split="nope")
    assert not (tmp_path / "x.png").exists()


def test_bad_input(tmp_path, summaries):
    with pytest.raises(RactError, match="no evaluation summaries"):
        report.metrics_table([])
    broken = dict(summaries[0])
    del broken["seed"]
    with pytest.raises(RactError, match="missing key 'seed'"):
        report.metrics_table([broken])
    with pytest.raises(RactError, match="more than one summary"):
        report.metrics_table([summaries[0], summaries[0]])
    with pytest.raises(RactError, match="no training histories"):
        report.plot_training_curves({}, tmp_path / "c.png")
    with pytest.raises(RactError, match="val_ndcg@100"):
        report.plot_training_curves(
            {1: history(1).drop(columns="val_ndcg@100")}, tmp_path / "c.png"
        )
    with pytest.raises(RactError, match="empty"):
        report.plot_training_curves({1: history(1).iloc[0:0]}, tmp_path / "c.png")
    with pytest.raises(RactError, match="unknown stage"):
        report.plot_training_curves(
            {1: history(1).replace("finetune", "other")}, tmp_path / "c.png"
        )
    with pytest.raises(RactError, match="empty"):
        report.plot_metric_bars(pd.DataFrame(), tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_markdown_keeps_integer_columns_integer_beside_floats():
    frame = pd.DataFrame({"seed": [1, 2], "steps": [2000, 2000], "r": [0.81234, 0.5]})
    text = report.markdown_table(frame, floatfmt=".3f")
    assert "| 1 | 2000 | 0.812 |" in text and "| 2 | 2000 | 0.500 |" in text


def test_gain_by_activity_groups_and_plot(tmp_path):
    activity = np.arange(1, 41)  # 40 users, 10 per quartile
    a = np.full(40, 0.4)
    b = a + np.where(activity > 30, 0.1, 0.0)  # only the most active quarter gains
    groups = report.gain_by_activity(activity, a, b)
    assert groups["users"].tolist() == [10, 10, 10, 10]
    assert groups["min_items"].tolist() == [1, 11, 21, 31]
    np.testing.assert_allclose(groups["mean_diff"], [0, 0, 0, 0.1], atol=1e-12)
    report.plot_gain_by_activity(groups, tmp_path / "g.png", tmp_path / "g.pdf")
    assert (tmp_path / "g.png").stat().st_size > 1000 and (tmp_path / "g.pdf").stat().st_size
    with pytest.raises(RactError, match="need at least 4"):
        report.gain_by_activity([1, 2], [0, 0], [1, 1])


def critic_fit_table(seed, n=60, noise=0.05):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 1, n)
    frame = pd.DataFrame(
        {
            "user": [f"u{i}" for i in range(n)],
            "ndcg@100": truth,
            "critic": truth + rng.normal(0, noise, n),  # tracks the truth
            "nll": rng.normal(300, 50, n),
        }
    )  # unrelated to it
    frame.loc[0, "ndcg@100"] = np.nan  # a user with nothing held out is left out
    return frame


def test_plot_critic_fit(tmp_path):
    fits = {1: critic_fit_table(1), 2: critic_fit_table(2)}
    shown = report.plot_critic_fit(fits, tmp_path / "f.png", tmp_path / "f.pdf")
    assert_figure(tmp_path / "f.png", b"\x89PNG")
    assert_figure(tmp_path / "f.pdf", b"%PDF")
    pooled = pd.concat(fits.values()).dropna()
    assert shown == {
        "users": len(pooled),  # the pooled r of the titles, for the caller's table
        "critic": pearson(pooled["critic"], pooled["ndcg@100"]),
        "nll": pearson(pooled["nll"], pooled["ndcg@100"]),
    }
    assert pearson(pooled["critic"], pooled["ndcg@100"]) > 0.9
    assert abs(pearson(pooled["nll"], pooled["ndcg@100"])) < 0.3
    assert math.isnan(pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))
    with pytest.raises(RactError, match=r"seed 1 has no column\(s\) \['critic'\]"):
        report.plot_critic_fit({1: fits[1].drop(columns="critic")}, tmp_path / "x.png")
    with pytest.raises(RactError, match="no user has a defined"):
        report.plot_critic_fit({1: fits[1].assign(**{"ndcg@100": np.nan})}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_summaries_from_different_splits_are_refused(summaries):
    same = [dict(s, data_hash="a" * 64, path=f"s{i}.json") for i, s in enumerate(summaries)]
    assert report.check_same_data(same) == "a" * 64
    other = same[:-1] + [dict(same[-1], data_hash="b" * 64)]
    with pytest.raises(
        RactError,
        match=r"2 different splits.*aaaaaaaaaaaa: s0.json, s1.json, "
        r"s2.json and 1 more; bbbbbbbbbbbb: s4.json",
    ):
        report.check_same_data(other)
    with pytest.raises(RactError, match="s0.json: evaluation summary has no data_hash"):
        report.check_same_data([dict(same[0], data_hash=None)] + same[1:])


def test_failed_model_is_shown_not_dropped(tmp_path, summaries):
    failed = {
        "split": "test",
        "status": "failed",
        "error": "EASE on 20108 items needs 6 GiB",
        "model": "EASE",
        "seed": 0,
        "variant": "main",
    }
    table = report.metrics_table(summaries + [failed])
    row = table[table["model"] == "EASE"].iloc[0]
    assert row["status"] == "failed" and math.isnan(row["ndcg@100"])
    assert (table.loc[table["model"] != "EASE", "status"] == "ok").all()
    agg = report.aggregate_table(table, metrics=("recall@20", "ndcg@100"))
    ease = agg[agg["model"] == "EASE"].iloc[0]
    assert (ease["seeds"], ease["failed"]) == (0, 1) and math.isnan(ease["ndcg@100"])
    ract = agg[(agg["model"] == "RaCT")].iloc[0]
    assert (ract["seeds"], ract["failed"]) == (3, 0)
    assert report.failures(summaries + [failed]) == [
        {"model": "EASE", "seed": 0, "split": "test", "error": failed["error"]}
    ]
    report.plot_metric_bars(agg, tmp_path / "b.png")  # EASE keeps its place, marked failed
    assert_figure(tmp_path / "b.png", b"\x89PNG")


def test_comparison_document_gives_the_same_table_and_verdicts_in_markdown_and_html(summaries):
    table = report.metrics_table(summaries)
    aggregate = report.aggregate_table(table, ("recall@20", "ndcg@100"))
    test = {
        "a": "Mult-VAE",
        "b": "RaCT",
        "n": 9,
        "mean_diff": 0.1,
        "boot_low": 0.05,
        "boot_high": 0.15,
        "ci95_low": 0.04,
        "ci95_high": 0.16,
        "effect_size_dz": 0.8,
        "wins": 7,
        "losses": 1,
        "ties": 1,
        "wilcoxon_pvalue": 0.01,
        "t_pvalue": 0.02,
        "verdict": "better",
    }
    groups = pd.DataFrame(
        {
            "group": ["Q1"],
            "min_items": [1],
            "max_items": [9],
            "users": [9],
            "mean_diff": [0.1],
            "se": [0.01],
        }
    )
    study = report.Comparison(
        table,
        aggregate,
        tests=[test],
        failed=[{"model": "EASE", "seed": 0, "split": "test", "error": "a <b> & c"}],
        groups=groups,
        critic=pd.DataFrame({"seed": [1], "r": [0.51234]}),
        fit_r={"users": 9, "critic": 0.5, "nll": 0.1},
    )
    doc = report.comparison_document(
        study, metrics=("recall@20", "ndcg@100"), starts={"RaCT": "Mult-VAE"}
    )
    md = report.markdown_document(doc)
    page = report.html_document(doc, "ml-100k: the models compared")
    assert "| test | RaCT | 3 | 0 | 0.4000 ± 0.1155 | 0.5000 ± 0.0000 |" in md
    assert "- **RaCT − Mult-VAE**, test NDCG@100" in md and "Verdict: **RaCT better than" in md
    assert (
        '<td>RaCT</td><td class="num">3</td><td class="num">0</td><td>0.4000 ± 0.1155</td>'
    ) in page
    assert "<li><strong>RaCT − Mult-VAE</strong>, test NDCG@100" in page
    assert "Verdict: <strong>RaCT better than Mult-VAE</strong>." in page
    assert "a &lt;b&gt; &amp; c" in page and "<b>" not in page  # cells and text are escaped
    assert '<td class="num">0.512</td>' in page  # the table's own float format
    assert "<script" not in page and page.startswith("<!DOCTYPE html>")


def test_histories_are_read_by_seed_in_the_order_given(tmp_path):
    full = history(1)
    for stage in ("actor_pretrain", "critic_pretrain", "finetune"):
        full[full["stage"] == stage].to_csv(tmp_path / f"{stage}.csv", index=False)
    files = [(1, tmp_path / f"{s}.csv") for s in ("actor_pretrain", "critic_pretrain")]
    files += [(2, tmp_path / "finetune.csv"), (1, tmp_path / "finetune.csv")]
    runs = report.read_histories(files)
    assert list(runs) == [1, 2]
    pd.testing.assert_frame_equal(runs[1], full)
    assert set(runs[2]["stage"]) == {"finetune"}
    assert report.read_histories([]) == {}


def test_critic_table_reads_the_kept_epoch_and_the_best_r():
    run = history(1).assign(steps=range(23), critic_r_train=0.5, val_nll_r=0.1)
    run = run.assign(val_nll_slope_negative=0.9, kept=run["epoch"] == 3)
    critic = run[run["stage"] == "critic_pretrain"]
    best = critic.loc[critic["val_critic_r"].idxmax()]
    row = report.critic_table({1: run}).iloc[0]
    assert (row["seed"], row["critic steps"], row["kept epoch"]) == (1, 17, 3)
    assert row["best r (epoch)"] == f"{best['val_critic_r']:.3f} ({int(best['epoch'])})"
    assert row["critic r (validation users)"] == critic.iloc[3]["val_critic_r"]
    # a history written before `kept` existed: the stage kept its last epoch
    assert report.critic_table({1: run.drop(columns="kept")}).iloc[0]["kept epoch"] == 10


def test_per_user_tables_must_cover_the_same_users(tmp_path):
    users = pd.DataFrame({"user": list("6789"), "n_input": [1, 2, 3, 4], "n_holdout": 1})
    for name, ndcg in (("a1", [0.1, 0.2, 0.3, 0.4]), ("a2", [0.3, 0.2, 0.1, 0]), ("b1", 0.5)):
        users.assign(**{"ndcg@100": ndcg}).to_csv(tmp_path / f"{name}.csv", index=False)
    tables = [("A", tmp_path / "a1.csv"), ("A", tmp_path / "a2.csv"), ("B", tmp_path / "b1.csv")]
    ndcg, first = report.per_user_ndcg(tables)
    assert [len(ndcg["A"]), len(ndcg["B"])] == [2, 1] and first["user"].tolist() == list("6789")
    groups = report.gain_of_test({"a": "A", "b": "B"}, ndcg, first)
    # b - a per user, a averaged over its seeds; users grouped by items known (2 to 5)
    assert groups["min_items"].tolist() == [2, 3, 4, 5]
    np.testing.assert_allclose(groups["mean_diff"], [0.3, 0.3, 0.3, 0.3])
    users.iloc[::-1].assign(**{"ndcg@100": 0.5}).to_csv(tmp_path / "b1.csv", index=False)
    with pytest.raises(RactError, match="b1.csv: its test users differ from those of .*a1.csv"):
        report.per_user_ndcg(tables)
