"""Result tables and figures from training histories and evaluation summaries.

A plain library: every input is passed in as an argument (summary dicts, history frames, output
paths) and every file is written atomically through `ract.io`. Figures are drawn on
`matplotlib.figure.Figure` objects with the Agg canvas, so no global pyplot or backend state is
touched.

Summaries are the JSON written by evaluation, plus three keys added by the caller: `model` (the
display name, e.g. "Mult-VAE" or "RaCT"), `seed` (int) and `variant` (str, e.g. "main").
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .correlation import pearson
from .errors import RactError
from .formats import PAPER_METRICS, STAGES
from .io import atomic_path
from .paper import CRITIC_CORRELATION, paper_comparison, paper_table

KEY_COLUMNS = ("variant", "model", "seed", "split", "epoch", "users", "status")
GROUP_COLUMNS = ("variant", "split", "model")
STAGE_TITLES = {
    "actor_pretrain": "1. actor pre-training",
    "critic_pretrain": "2. critic pre-training\n(actor frozen)",
    "finetune": "3. actor-critic fine-tuning",
}
NDCG_COLUMN = "val_ndcg@100"
CRITIC_R_COLUMN = "val_critic_r"
# the critic's fit in a training history, as the columns of `critic_table` call it
CRITIC_FIT = {
    "critic_r_train": "critic r (training batches)",
    "val_critic_r": "critic r (validation users)",
    "val_nll_r": "NLL r (validation users)",
    "val_nll_slope_negative": "share of users with d critic/d NLL < 0",
}


# ----------------------------------------------------------------------------------------------
# Reading inputs


def read_summary(path: str | os.PathLike, *, model: str, seed: int, variant: str) -> dict:
    """Load an evaluation summary JSON and add the `model`, `seed` and `variant` keys."""
    path = Path(path)
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RactError(f"{path}: evaluation summary not found") from None
    except (OSError, ValueError) as exc:
        raise RactError(f"{path}: cannot read evaluation summary as JSON ({exc})") from None
    if not isinstance(summary, dict):
        raise RactError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    return {**summary, "model": model, "seed": int(seed), "variant": variant, "path": str(path)}


def check_same_data(summaries: Sequence[Mapping]) -> str:
    """The one data hash all evaluation summaries were computed on; refuses summaries from
    different splits or data (their numbers are not comparable) and ones without a hash."""
    by_hash: dict[str, list[str]] = {}
    for i, summary in enumerate(summaries):
        where = summary.get("path") or _summary_name(summary, i)
        digest = summary.get("data_hash")
        if not digest:
            raise RactError(
                f"{where}: evaluation summary has no data_hash (written by an older "
                "ract); evaluate this model again"
            )
        by_hash.setdefault(str(digest), []).append(str(where))
    if len(by_hash) > 1:
        groups = "; ".join(
            f"{digest[:12]}: {', '.join(paths[:3])}"
            f"{f' and {len(paths) - 3} more' if len(paths) > 3 else ''}"
            for digest, paths in by_hash.items()
        )
        raise RactError(
            f"evaluation summaries come from {len(by_hash)} different splits or data "
            f"sets and cannot be compared ({groups}); evaluate every model on the "
            "same split"
        )
    if not by_hash:
        raise RactError("check data: no evaluation summaries given")
    return next(iter(by_hash))


def failures(summaries: Sequence[Mapping]) -> list[dict]:
    """(model, seed, split, error) of every summary that records a failed model."""
    return [
        {
            "model": s.get("model"),
            "seed": s.get("seed"),
            "split": s.get("split"),
            "error": s.get("error", "unknown error"),
        }
        for s in summaries
        if s.get("status") == "failed"
    ]


def read_history(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate the per-stage history CSVs of one run (in the given order)."""
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path))
        except FileNotFoundError:
            raise RactError(f"{path}: training history not found") from None
        except (OSError, ValueError) as exc:
            raise RactError(f"{path}: cannot read training history ({exc})") from None
    if not frames:
        raise RactError("read_history: no history files given")
    return pd.concat(frames, ignore_index=True)


def read_histories(files: Iterable[tuple[int, str | os.PathLike]]) -> dict[int, pd.DataFrame]:
    """{seed: its run's history}, from (seed, path) pairs: a seed's files (one per stage, or one
    alone) concatenated in the order given (`read_history`)."""
    by_seed: dict[int, list] = {}
    for seed, path in files:
        by_seed.setdefault(seed, []).append(path)
    return {seed: read_history(paths) for seed, paths in by_seed.items()}


def per_user_ndcg(
    tables: Sequence[tuple[str, str | os.PathLike]],
) -> tuple[dict[str, list[np.ndarray]], pd.DataFrame]:
    """From (model name, path) of per-user test tables, seed by seed: {model name: [per-user
    test NDCG@100 of each seed]}, and the first table (its users and their item counts). Every
    table must hold the same users in the same order (they come from one split), which the
    per-user averaging over seeds relies on."""
    paths = [path for _, path in tables]
    frames = [pd.read_csv(path, dtype={"user": str}) for path in paths]
    for path, frame in zip(paths[1:], frames[1:]):
        if not frame["user"].equals(frames[0]["user"]):
            raise RactError(
                f"{path}: its test users differ from those of {paths[0]}; the "
                "paired test needs every model evaluated on the same split"
            )
    by_model: dict[str, list[np.ndarray]] = {}
    for (model, _), frame in zip(tables, frames):
        by_model.setdefault(model, []).append(frame["ndcg@100"].to_numpy())
    return by_model, frames[0]


# ----------------------------------------------------------------------------------------------
# Tables


def metrics_table(summaries: Sequence[Mapping]) -> pd.DataFrame:
    """One row per evaluation summary.

    Columns: variant, model, seed, split, epoch, users (users evaluated), status ("ok", or
    "failed" for a summary that records a model that could not be fit: its metrics are NaN),
    then for every metric found in any summary `<metric>` (mean over users) and `<metric>_se`
    (standard error over users); a metric missing from a summary is NaN. Rows are sorted by
    variant, split, model, seed; metrics keep the order in which they first appear.
    """
    if not summaries:
        raise RactError("metrics table: no evaluation summaries given")
    rows, metric_names = [], {}  # a dict: the metrics in the order they first appear
    for i, summary in enumerate(summaries):
        row, names = _summary_row(summary, _summary_name(summary, i))
        rows.append(row)
        metric_names.update(dict.fromkeys(names))
    columns = list(KEY_COLUMNS) + [c for m in metric_names for c in (m, f"{m}_se")]
    table = pd.DataFrame(rows).reindex(columns=columns)
    dup = table.duplicated(subset=["variant", "split", "model", "seed"], keep=False)
    if dup.any():
        first = table[dup].iloc[0]
        raise RactError(
            f"evaluation summaries: more than one summary for variant "
            f"'{first['variant']}', split '{first['split']}', model "
            f"'{first['model']}', seed {first['seed']}"
        )
    table = table.sort_values(["variant", "split", "model", "seed"], kind="stable")
    table = table.reset_index(drop=True)
    table["seed"] = table["seed"].astype(int)
    table["epoch"] = pd.array(table["epoch"], dtype="Int64")
    table["users"] = pd.array(table["users"], dtype="Int64")
    return table


def _summary_row(summary: Mapping, where: str) -> tuple[dict, list[str]]:
    """One summary's row of `metrics_table` and the names of its metrics; a summary without a
    needed key, or with a metric without a mean, is refused (`where` names it)."""
    if not isinstance(summary, Mapping):
        raise RactError(
            f"evaluation summary {where}: expected a dict, got {type(summary).__name__}"
        )
    failed = summary.get("status") == "failed"
    for key in ("variant", "model", "seed", "split") + (() if failed else ("metrics",)):
        if key not in summary:
            raise RactError(f"evaluation summary {where}: missing key '{key}'")
    metrics = {} if failed else summary["metrics"]
    if not failed and (not isinstance(metrics, Mapping) or not metrics):
        raise RactError(f"evaluation summary {where}: 'metrics' must be a non-empty object")
    try:
        seed = int(summary["seed"])
    except (TypeError, ValueError):
        raise RactError(
            f"evaluation summary {where}: seed must be an integer, got {summary['seed']!r}"
        ) from None
    row = {
        "variant": str(summary["variant"]),
        "model": str(summary["model"]),
        "seed": seed,
        "split": str(summary["split"]),
        "epoch": summary.get("epoch"),
        "users": summary.get("n_users_evaluated", summary.get("n_users")),
        "status": "failed" if failed else "ok",
    }
    for name, value in metrics.items():
        if not isinstance(value, Mapping) or "mean" not in value:
            raise RactError(f"evaluation summary {where}: metric '{name}' has no 'mean'")
        row[name] = _as_float(value["mean"])
        row[f"{name}_se"] = _as_float(value.get("se"))
    return row, list(metrics)


def aggregate_table(table: pd.DataFrame, metrics: Sequence[str] = PAPER_METRICS) -> pd.DataFrame:
    """Across-seed summary of a `metrics_table`, one row per (variant, split, model).

    Columns: variant, split, model, seeds (number of seeds with results), failed (number of
    seeds where the model was recorded as failed), then per metric `<metric>` (mean
    over seeds), `<metric>_se` (standard error across seeds: sample std with ddof=1 over
    sqrt(seeds); NaN with one seed) and `<metric>_user_se` (mean over seeds of the per-user
    standard error, a fallback spread when there is only one seed). Seeds where a metric is NaN
    are left out of that metric's numbers.
    """
    metrics = list(metrics)
    if table is None or len(table) == 0:
        raise RactError("aggregate table: the metrics table is empty")
    if not metrics:
        raise RactError("aggregate table: no metrics requested")
    missing = [c for c in (*GROUP_COLUMNS, "seed", *metrics) if c not in table.columns]
    if missing:
        raise RactError(
            f"aggregate table: metrics table has no column(s) {missing}; "
            f"available: {list(table.columns)}"
        )
    rows = []
    for key, group in table.groupby(list(GROUP_COLUMNS), sort=True):
        row = dict(zip(GROUP_COLUMNS, key))
        status = group["status"] if "status" in group.columns else pd.Series("ok", group.index)
        ok = status != "failed"
        row["seeds"] = int(group.loc[ok, "seed"].nunique())
        row["failed"] = int(group.loc[~ok, "seed"].nunique())
        for m in metrics:
            values = pd.to_numeric(group[m], errors="coerce").dropna()
            n = len(values)
            row[m] = float(values.mean()) if n else math.nan
            row[f"{m}_se"] = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
            se_col = f"{m}_se"
            if se_col in group.columns:
                user_se = pd.to_numeric(group[se_col], errors="coerce").dropna()
                row[f"{m}_user_se"] = float(user_se.mean()) if len(user_se) else math.nan
            else:
                row[f"{m}_user_se"] = math.nan
        rows.append(row)
    columns = [*GROUP_COLUMNS, "seeds", "failed"] + [
        c for m in metrics for c in (m, f"{m}_se", f"{m}_user_se")
    ]
    return pd.DataFrame(rows, columns=columns)


def critic_table(histories: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """The critic's fit per seed, from each run's history (`read_histories`): its training
    steps, the epoch its checkpoint kept, the best validation r with its epoch, and the fit
    numbers at the kept epoch (`CRITIC_FIT`)."""
    return pd.DataFrame([_critic_row(seed, history) for seed, history in histories.items()])


def _critic_row(seed, history: pd.DataFrame) -> dict:
    critic = history[history["stage"] == "critic_pretrain"]
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
    return {
        "seed": seed,
        "critic steps": int(critic["steps"].iloc[-1]),
        "kept epoch": int(kept["epoch"]),
        "best r (epoch)": best,
        **{label: kept[column] for column, label in CRITIC_FIT.items()},
    }


def markdown_table(
    frame: pd.DataFrame, columns: Sequence[str] | None = None, floatfmt: str = ".4f"
) -> str:
    """A GitHub-flavoured Markdown table of `columns` (all columns when None).

    Floats use `floatfmt`, missing values print as "n/a", numeric columns are right-aligned and
    `|` inside cells is escaped. Ends with a newline.
    """
    columns = _table_columns(frame, columns)
    lines = [
        "| " + " | ".join(_cell(c, floatfmt).replace("|", "\\|") for c in columns) + " |",
        "|" + "|".join("---:" if _numeric(frame[c]) else ":---" for c in columns) + "|",
    ]
    # itertuples keeps each column's type (iterrows would turn the ints of a mixed row to floats)
    for record in frame[columns].itertuples(index=False, name=None):
        lines.append(
            "| " + " | ".join(_cell(v, floatfmt).replace("|", "\\|") for v in record) + " |"
        )
    return "\n".join(lines) + "\n"


def html_table(
    frame: pd.DataFrame, columns: Sequence[str] | None = None, floatfmt: str = ".4f"
) -> str:
    """The same table as `markdown_table`, as an HTML `<table>`."""
    columns = _table_columns(frame, columns)
    align = [' class="num"' if _numeric(frame[c]) else "" for c in columns]
    head = "".join(
        f"<th{a}>{html.escape(_cell(c, floatfmt))}</th>" for c, a in zip(columns, align)
    )
    rows = [
        "<tr>"
        + "".join(f"<td{a}>{html.escape(_cell(v, floatfmt))}</td>" for v, a in zip(record, align))
        + "</tr>"
        for record in frame[columns].itertuples(index=False, name=None)
    ]
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _table_columns(frame: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    columns = list(frame.columns) if columns is None else list(columns)
    if not columns:
        raise RactError("table: no columns given")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RactError(f"table: no column(s) {missing}; available: {list(frame.columns)}")
    return columns


def _cell(value, floatfmt: str) -> str:
    """One table cell as text: "n/a" for a missing value, ints as ints, floats in `floatfmt`,
    on one line."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), floatfmt)
    return str(value).replace("\n", " ")


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


# ----------------------------------------------------------------------------------------------
# The comparison page: one document, written as Markdown (comparison.md) and as HTML (the page
# `snakemake --report` shows inline). A document is a list of blocks: a str is a paragraph
# (`**bold**` allowed), a list of str a bulleted list, a `Table` a table.


@dataclass(frozen=True)
class Table:
    """A table block: `columns` of `frame` (all when None), floats printed with `floatfmt`."""

    frame: pd.DataFrame
    columns: Sequence[str] | None = None
    floatfmt: str = ".4f"


@dataclass(frozen=True)
class Comparison:
    """What the comparison page reports, computed from the study's files.

    `table`: per seed (`metrics_table`); `aggregate`: over seeds (`aggregate_table`); `tests`:
    the paired tests (`ract.stats.paired_tests`); `failed`: runs recorded as failed
    (`failures`); `groups`: the first test's difference by user activity (`gain_of_test`);
    `critic`: the critic's fit per seed (`critic_table`); `fit_r`: its pooled r over all
    users and seeds (`plot_critic_fit`)."""

    table: pd.DataFrame
    aggregate: pd.DataFrame
    tests: Sequence[Mapping]
    failed: Sequence[Mapping]
    groups: pd.DataFrame
    critic: pd.DataFrame
    fit_r: Mapping[str, float]


def comparison_document(
    study: Comparison,
    *,
    metrics: Sequence[str],
    starts: Mapping[str, str],
    paper: str | None = None,
) -> list:
    """The study's comparison page: every model's `metrics`, the paired tests with their
    verdicts, finetuned models that kept their starting actor (`starts`: name -> starting
    model's name), failed runs, the metrics per seed, the first test's difference by user
    activity, the critic's fit and, when `paper` names a data set the paper reports, its
    numbers beside ours."""
    return [
        *_headline(study, metrics),
        *_kept_and_failed(study, starts),
        *_details(study, metrics),
        *(_against_the_paper(study, paper) if paper else []),
    ]


def _headline(study: Comparison, metrics: Sequence[str]) -> list:
    """Every model's metrics over seeds, and the verdict of every paired test."""
    columns = ["split", "model", "seeds", "failed", *metrics]
    return [
        "Mean over seeds ± standard error across seeds; † one seed (or a deterministic "
        "model): ± is the standard error over users.",
        Table(_mean_cells(study.aggregate, metrics), columns),
        "Does the critic help? Paired tests on test users; the verdict is read from the 95% "
        "paired bootstrap interval of the mean difference (10,000 resamples of users), never "
        "from a p-value alone. RaCT against the NLL finetune control is the critic's own "
        "contribution: both continue the same Mult-VAE with the same schedule, batches, "
        "dropout masks and noise, one on the critic's score, one on the likelihood.",
        [verdict_line(t) for t in study.tests],
    ]


def _kept_and_failed(study: Comparison, starts: Mapping[str, str]) -> list:
    """Finetuned models that are their starting model, and models recorded as failed."""
    blocks = []
    kept = kept_pretrained(study.table[study.table["split"] == "test"], starts)
    if kept:
        blocks.append(kept)
    if study.failed:
        blocks += [
            "Models recorded as failed (no results; fix the setting named and rerun):",
            [f"{f['model']}, seed {f['seed']}, {f['split']}: {f['error']}" for f in study.failed],
        ]
    return blocks


def _details(study: Comparison, metrics: Sequence[str]) -> list:
    """The metrics per seed, the first test by user activity and the critic's fit."""
    first, fit_r = study.tests[0], study.fit_r
    return [
        "Per seed:",
        Table(study.table, ["split", "model", "seed", "epoch", "users", "status", *metrics]),
        f"{first['b']} - {first['a']} test NDCG@100 by user activity (items known per user):",
        Table(study.groups, ["group", "min_items", "max_items", "users", "mean_diff", "se"]),
        "Critic fit at the kept critic epoch (best: the highest validation r of any validated "
        "epoch):",
        Table(study.critic, floatfmt=".3f"),
        f"Over all validation users and seeds ({fit_r['users']}), Pearson r with the true "
        f"NDCG@100: critic {fit_r['critic']:+.3f}, NLL {fit_r['nll']:+.3f} (paper, ML-20M: "
        "about 0.49 and 0.05).",
    ]


def _against_the_paper(study: Comparison, paper: str) -> list:
    """The paper's numbers for its data set `paper` beside ours."""
    cells, note = paper_table(paper_comparison(study.aggregate, paper))
    blocks = [
        f"Against the paper ({paper}, test users; ours: mean over seeds):",
        Table(cells),
        note,
    ]
    if paper in CRITIC_CORRELATION:
        ref, fit_r = CRITIC_CORRELATION[paper], study.fit_r
        blocks.append(
            f"Pearson r with the true NDCG@100, ours on validation users / paper on "
            f"test users: critic {fit_r['critic']:+.3f} / {ref['critic']:+.2f}, NLL "
            f"{fit_r['nll']:+.3f} / {ref['nll']:+.2f}."
        )
    return blocks


def markdown_document(doc: Sequence) -> str:
    """A `comparison_document` as Markdown, blocks separated by a blank line."""
    blocks = [
        markdown_table(b.frame, b.columns, b.floatfmt).rstrip("\n")
        if isinstance(b, Table)
        else "\n".join(f"- {item}" for item in b)
        if isinstance(b, list)
        else b
        for b in doc
    ]
    return "\n\n".join(blocks) + "\n"


def html_document(doc: Sequence, title: str) -> str:
    """A `comparison_document` as one self-contained HTML page (no scripts, no external files),
    which Snakemake's report shows inline."""

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))

    blocks = [
        html_table(b.frame, b.columns, b.floatfmt)
        if isinstance(b, Table)
        else "<ul>\n" + "\n".join(f"<li>{inline(item)}</li>" for item in b) + "\n</ul>"
        if isinstance(b, list)
        else f"<p>{inline(b)}</p>"
        for b in doc
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_PAGE_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(blocks) + "\n</body>\n</html>\n"
    )


_PAGE_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; max-width: 80em; color: #222; }
h1 { font-size: 1.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
li { margin-bottom: 0.5em; }
"""


def signed(x: float) -> str:
    """+0.0012, or +3.1e-05 where four decimals would print a nonzero difference as 0."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 5e-5 else f"{x:+.1e}"


def verdict_line(test: Mapping) -> str:
    """One sentence: the difference, its intervals, both p-values and the verdict in words."""
    a, b = test["a"], test["b"]
    words = {
        "better": f"{b} better than {a}",
        "worse": f"{b} worse than {a}",
        "no detectable difference": "no detectable difference",
    }[test["verdict"]]
    return (
        f"**{b} − {a}**, test NDCG@100 per user ({test['n']} users, averaged over "
        f"seeds): mean difference {signed(test['mean_diff'])}, 95% paired bootstrap interval "
        f"{signed(test['boot_low'])} to {signed(test['boot_high'])} (t interval "
        f"{signed(test['ci95_low'])} to {signed(test['ci95_high'])}); Cohen's d_z "
        f"{test['effect_size_dz']:+.3f}; {test['wins']} users better / {test['losses']} "
        f"worse / {test['ties']} tied; Wilcoxon signed-rank p = "
        f"{test['wilcoxon_pvalue']:.3g} (ties split), paired t-test p = "
        f"{test['t_pvalue']:.3g}. Verdict: **{words}**."
    )


def kept_pretrained(table: pd.DataFrame, starts: Mapping[str, str]) -> list[str]:
    """Sentences for each finetuned model (`starts`: its name -> its starting model's) that
    kept epoch 0 for every seed: its numbers are then the starting actor's, not a result of
    finetuning."""
    lines = []
    for model, start in starts.items():
        rows = table[(table["model"] == model) & (table["status"] == "ok")]
        if len(rows) and (rows["epoch"] == 0).all():
            lines.append(
                f"{model} is {start}: on validation users no finetune epoch beat the "
                f"pretrained actor for any seed, so every seed kept epoch 0, the "
                f"{start} checkpoint itself."
            )
    return lines


def _mean_cells(aggregate: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """`aggregate` with each metric as text: mean ± standard error across seeds, or ± over
    users marked † for one seed; "failed" or "n/a" where there is no mean."""
    cells = aggregate.copy()
    for m in metrics:
        cells[m] = [
            ("failed" if seeds == 0 else "n/a")
            if pd.isna(a)
            else f"{a:.4f} ± {b:.4f}"
            if pd.notna(b)
            else f"{a:.4f} ± {u:.4f}†"
            if pd.notna(u)
            else f"{a:.4f}"
            for a, b, u, seeds in zip(
                aggregate[m], aggregate[f"{m}_se"], aggregate[f"{m}_user_se"], aggregate["seeds"]
            )
        ]
    return cells


# ----------------------------------------------------------------------------------------------
# Figures


def plot_training_curves(
    histories: Mapping[int, pd.DataFrame],
    path_png: str | os.PathLike,
    path_pdf: str | os.PathLike | None = None,
    controls: Mapping[int, pd.DataFrame] | None = None,
) -> None:
    """Validation NDCG@100 through the training stages, one line per seed.

    `histories` maps seed -> that run's stage histories concatenated (columns `stage`, `epoch`,
    `val_ndcg@100`, optionally `val_critic_r`). The x axis counts epochs cumulatively over the
    stages (actor, then critic, then fine-tuning), broken into one panel per stage so the short
    actor and fine-tuning stages are not squeezed by the long critic stage; dashed lines mark
    where each stage starts. The actor panel has its own y scale (NDCG climbs from near zero);
    the critic and fine-tuning panels share a zoomed y scale so fine-tuning changes are visible.
    When critic Pearson r values are present, a second row shows them for the critic and
    fine-tuning stages. `controls` (seed -> the likelihood control arm's finetune history) are
    drawn dotted in the fine-tuning panel, in their seed's colour: where RaCT's line leaves
    its control's is what the critic did.
    """
    runs = _checked_histories(histories)
    stages = [s for s in STAGES if any((f["stage"] == s).any() for f in runs.values())]
    has_r = any(
        _stage_rows(f, s, CRITIC_R_COLUMN) is not None
        for f in runs.values()
        for s in stages
        if s != "actor_pretrain"
    )
    nrows = 2 if has_r else 1
    colors = {seed: _color(i) for i, seed in enumerate(sorted(runs, key=_seed_key))}

    fig = Figure(figsize=(max(4.0, 3.8 * len(stages)), 3.4 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(nrows, len(stages), height_ratios=[1.3, 1][:nrows])
    top, bottom, zoom_ref = _stage_axes(fig, grid, stages, has_r)
    for stage, span in _stage_spans(runs, stages).items():
        lines = {seed: (runs[seed], (controls or {}).get(seed)) for seed in colors}
        _draw_stage(top[stage], bottom.get(stage), stage, span, lines, colors)
    _label_stage_axes(top, bottom, zoom_ref, stages)
    _curves_legend(fig, grid, top[stages[0]], stages, has_r, controls)
    fig.supxlabel("epoch (cumulative over stages)", fontsize=10)
    fig.suptitle("Validation NDCG@100 through training", fontsize=12)
    _save(fig, path_png, path_pdf)


def _checked_histories(histories: Mapping[int, pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """`histories`, refused when empty, without a needed column or with an unknown stage."""
    if not histories:
        raise RactError("training curves: no training histories given")
    for seed, frame in histories.items():
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise RactError(f"training curves: history of seed {seed} is empty")
        for col in ("stage", "epoch", NDCG_COLUMN):
            if col not in frame.columns:
                raise RactError(f"training curves: history of seed {seed} has no column '{col}'")
        unknown = sorted(set(frame["stage"].astype(str)) - set(STAGES))
        if unknown:
            raise RactError(
                f"training curves: history of seed {seed} has unknown stage(s) "
                f"{unknown}; expected {list(STAGES)}"
            )
    return dict(histories)


def _stage_spans(runs: Mapping, stages: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{stage: (first, last) epoch on the cumulative axis}: a stage starts where the one before
    it ends, each as long as its longest run."""
    spans, total = {}, 0
    for stage in stages:
        length = max(
            int(f.loc[f["stage"] == stage, "epoch"].max())
            for f in runs.values()
            if (f["stage"] == stage).any()
        )
        spans[stage] = (total, total + length)
        total += length
    return spans


def _stage_rows(frame: pd.DataFrame, stage: str, column: str) -> pd.DataFrame | None:
    """(epoch, `column`) of one stage's epochs with a value, by epoch; None when there are none."""
    if column not in frame:
        return None
    rows = frame.loc[frame["stage"] == stage, ["epoch", column]]
    rows = rows.assign(**{column: pd.to_numeric(rows[column], errors="coerce")})
    rows = rows.dropna().sort_values("epoch")
    return rows if len(rows) else None


def _stage_axes(fig: Figure, grid, stages: Sequence[str], has_r: bool) -> tuple:
    """The panels: `top` (NDCG, stage -> axes; the critic and finetune stages share the zoomed
    y scale of `zoom_ref`, the first of them) and, with critic r values, `bottom` (r, for the
    stages with a critic)."""
    top, bottom = {}, {}
    zoom_ref = None
    for j, stage in enumerate(stages):
        if stage == "actor_pretrain" or zoom_ref is None:
            ax = fig.add_subplot(grid[0, j])
            if stage != "actor_pretrain":
                zoom_ref = ax
        else:
            ax = fig.add_subplot(grid[0, j], sharey=zoom_ref)
            ax.tick_params(labelleft=False)
        top[stage] = ax
        if has_r and stage != "actor_pretrain":
            bottom[stage] = fig.add_subplot(
                grid[1, j], sharex=ax, sharey=next(iter(bottom.values()), None)
            )
            ax.tick_params(labelbottom=False)
            if len(bottom) > 1:
                bottom[stage].tick_params(labelleft=False)
    return top, bottom, zoom_ref


def _draw_stage(top, bottom, stage: str, span: tuple[int, int], lines: Mapping, colors) -> None:
    """One stage's panels: each seed's NDCG (`lines`: seed -> (its history, its control's
    history or None); the control dotted, in the finetune panel) and critic r, the x range
    and the line where the stage starts."""
    off, end = span
    for seed, (run, control) in lines.items():
        ndcg_lines = [(run, {"lw": 1.4, "label": f"seed {seed}"})]
        if control is not None and stage == "finetune":
            ndcg_lines.append(
                (control, {"lw": 1.2, "ls": ":", "label": f"seed {seed}, NLL control"})
            )
        for history, style in ndcg_lines:
            rows = _stage_rows(history, stage, NDCG_COLUMN)
            if rows is not None:
                top.plot(rows["epoch"] + off, rows[NDCG_COLUMN], color=colors[seed], **style)
        rows = _stage_rows(run, stage, CRITIC_R_COLUMN) if bottom is not None else None
        if rows is not None:
            bottom.plot(
                rows["epoch"] + off, rows[CRITIC_R_COLUMN], color=colors[seed], lw=1.0, alpha=0.85
            )
    width = max(end - off, 1)
    for ax in (top, bottom):
        if ax is None:
            continue
        # A small margin on both sides keeps the stage-start line off the axis spine.
        ax.set_xlim(off - 0.03 * width, end + 0.03 * width)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=9)
        if off > 0:  # stage boundary: this stage starts from the previous stage's model
            ax.axvline(off, color="0.35", ls="--", lw=1.0)
    top.set_title(f"{STAGE_TITLES[stage]}\nepochs {off}\u2013{end}", fontsize=10)


def _label_stage_axes(top: Mapping, bottom: Mapping, zoom_ref, stages: Sequence[str]) -> None:
    """The y labels, the zero line of r, and in the actor panel the band the zoomed panels
    cover."""
    first = top[stages[0]]
    if zoom_ref is not None and "actor_pretrain" in top:
        # Show in the actor panel which NDCG range the zoomed panels cover.
        low, high = zoom_ref.get_ylim()
        top["actor_pretrain"].axhspan(low, high, color="0.5", alpha=0.18, lw=0, zorder=0)
    first.set_ylabel("validation NDCG@100", fontsize=10)
    if zoom_ref is not None and zoom_ref is not first:
        zoom_ref.set_ylabel("validation NDCG@100 (zoomed)", fontsize=10)
    if bottom:
        next(iter(bottom.values())).set_ylabel("critic validation\nPearson r", fontsize=10)
        for ax in bottom.values():
            ax.axhline(0.0, color="0.6", lw=0.8)


def _curves_legend(fig: Figure, grid, first, stages: Sequence[str], has_r: bool, controls):
    """The seeds' legend: in the free panel below the actor's (which has no critic) with a
    note on the line styles, else beside the panels."""
    handles, labels = first.get_legend_handles_labels()
    legend = {"fontsize": 9, "title": "run", "title_fontsize": 9, "frameon": False}
    if not (has_r and "actor_pretrain" in stages):
        fig.legend(handles, labels, loc="outside right center", **legend)
        return
    spare = fig.add_subplot(grid[1, stages.index("actor_pretrain")])
    spare.axis("off")
    spare.legend(handles, labels, loc="upper center", **legend)
    spare.text(
        0.5,
        0.08,
        "no critic during actor pre-training\ndashed lines: start of a stage\n"
        "grey band: y range of the zoomed panels"
        + ("\ndotted: the NLL finetune control" if controls else ""),
        ha="center",
        va="bottom",
        fontsize=8.5,
        color="0.3",
        transform=spare.transAxes,
    )


def plot_metric_bars(
    aggregate: pd.DataFrame,
    path_png: str | os.PathLike,
    path_pdf: str | os.PathLike | None = None,
    split: str = "test",
    metrics: Sequence[str] | None = None,
) -> None:
    """Grouped bars: one group per metric, one bar per model (per variant and model when the
    aggregate holds several variants), from an `aggregate_table`.

    Bar height is the mean over seeds. Error bars are the standard error across seeds
    (`<metric>_se`); for a row with a single seed, where that is undefined, the per-user
    standard error (`<metric>_user_se`) is drawn instead and the legend says so. `metrics`
    defaults to every metric in the aggregate.
    """
    frame, metrics = _bar_rows(aggregate, split, metrics)
    several_variants = frame["variant"].nunique() > 1
    series = frame.to_dict("records")
    n = len(series)
    fig = Figure(
        figsize=(max(7.0, 1.1 + len(metrics) * (0.5 + 0.45 * n)), 4.2 + 0.25 * (n // 2)),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = 0.0
    for i, row in enumerate(series):
        top = max(top, _draw_bars(ax, i, n, row, metrics, several_variants))
    ax.set_xticks(np.arange(len(metrics)), metrics, fontsize=10)
    ax.set_ylabel("mean metric value over seeds", fontsize=10)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title(f"{split} split: mean over seeds \u00b1 standard error", fontsize=11)
    fig.legend(loc="outside lower center", ncols=min(n, 2), fontsize=9, frameon=False)
    _save(fig, path_png, path_pdf)


def _bar_rows(
    aggregate: pd.DataFrame, split: str, metrics: Sequence[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    """The aggregate's rows of `split` (`failed` 0 where the column is missing) and the metrics
    to draw (by default every metric in it); refused when either is missing."""
    if aggregate is None or len(aggregate) == 0:
        raise RactError("metric bars: the aggregate table is empty")
    missing = [c for c in (*GROUP_COLUMNS, "seeds") if c not in aggregate.columns]
    if missing:
        raise RactError(f"metric bars: aggregate table has no column(s) {missing}")
    aggregate = aggregate.assign(failed=aggregate.get("failed", 0))
    frame = aggregate[aggregate["split"] == split]
    if frame.empty:
        raise RactError(
            f"metric bars: no rows for split '{split}'; "
            f"available: {sorted(set(aggregate['split']))}"
        )
    if metrics is None:
        metrics = [
            c
            for c in aggregate.columns
            if c not in (*GROUP_COLUMNS, "seeds", "failed") and not c.endswith("_se")
        ]
    metrics = list(metrics)
    absent = [m for m in metrics if m not in frame.columns]
    if not metrics or absent:
        raise RactError(f"metric bars: metric(s) {absent or metrics} not in the aggregate table")
    return frame, metrics


def _draw_bars(ax, i: int, n: int, row: Mapping, metrics: list[str], several_variants) -> float:
    """The bars of row `i` of `n` (one model), each metric's value with its error bar, and its
    number above it (when there are at most 4 bars per metric) or "failed" / "missing" in its
    place. Returns the highest bar top (with its error bar), -inf if none."""
    width = 0.8 / n
    single = int(row["seeds"]) < 2
    heights = np.array([_as_float(row[m]) for m in metrics])
    err_cols = [f"{m}_user_se" if single else f"{m}_se" for m in metrics]
    errors = np.array([_as_float(row.get(c)) for c in err_cols])
    yerr = np.where(np.isfinite(errors), errors, 0.0)
    bars = ax.bar(
        np.arange(len(metrics)) - 0.4 + width * (i + 0.5),
        heights,
        width * 0.92,
        color=_color(i),
        label=_bar_label(row, several_variants, single),
        yerr=yerr,
        capsize=3,
        error_kw={"lw": 1.0, "ecolor": "0.2"},
    )
    for bar, h, e in zip(bars, heights, yerr):
        middle = bar.get_x() + bar.get_width() / 2
        if not np.isfinite(h):  # a model without results keeps its place, marked
            note = " failed" if row["failed"] else " missing"
            ax.text(
                middle, 0, note, rotation=90, ha="center", va="bottom", fontsize=8, color=_color(i)
            )
        elif n <= 4:
            ax.text(middle, h + e, f"{h:.3f}", ha="center", va="bottom", fontsize=8)
    finite = heights + yerr
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if len(finite) else -math.inf


def _bar_label(row: Mapping, several_variants: bool, single: bool) -> str:
    """A model's legend entry: its name (and variant), its seeds, failed seeds, and whether its
    error bars are over users."""
    label = f"{row['model']} [{row['variant']}]" if several_variants else str(row["model"])
    if row["seeds"] == 0:
        return label + " (failed: no results)"
    label += f" ({row['seeds']} seed{'s' if row['seeds'] != 1 else ''}"
    label += f", {row['failed']} failed" if row["failed"] else ""
    return label + (", per-user SE)" if single else ")")


def plot_critic_fit(
    fits: Mapping[int, pd.DataFrame],
    path_png: str | os.PathLike,
    path_pdf: str | os.PathLike | None = None,
    *,
    metric: str = "ndcg@100",
    split: str = "validation",
) -> dict[str, float]:
    """Critic prediction (left) and the actor's NLL (right) against the true `metric` per user,
    one colour per seed, with Pearson r over all users in each title and per seed in the
    legend (the paper's check that the critic tracks NDCG far better than the NLL does).

    `fits` maps seed -> a `ract.evaluate.critic_fit_frame` table (columns `metric`, `critic`,
    `nll`); users whose true value is undefined (nothing held out) are left out. Returns the
    pooled r shown in the titles, {"critic": r, "nll": r, "users": user-seeds}.
    """
    clean = _critic_fit_tables(fits, metric)
    pooled = pd.concat(clean.values(), ignore_index=True)
    label = metric.replace("ndcg", "NDCG").replace("recall", "Recall")
    fig = Figure(figsize=(10, 4.6 + 0.2 * len(clean)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    pooled_r = {"users": len(pooled)}
    for ax, column in zip(axes, _FIT_PANELS):
        pooled_r[column] = _draw_fit_panel(ax, clean, pooled, metric, column)
    axes[0].set_ylabel(f"true {label} on held-out items", fontsize=10)
    fig.suptitle(
        f"How well the critic predicts {label} ({split} users, after critic pre-training)",
        fontsize=11,
    )
    _save(fig, path_png, path_pdf)
    return pooled_r


def _critic_fit_tables(fits: Mapping[int, pd.DataFrame], metric: str) -> dict:
    """seed -> its users' (`metric`, critic, nll), numeric and defined, in seed order."""
    if not fits:
        raise RactError("critic fit: no per-user critic tables given")
    for seed, frame in fits.items():
        absent = [c for c in (metric, "critic", "nll") if c not in frame.columns]
        if absent:
            raise RactError(f"critic fit: table of seed {seed} has no column(s) {absent}")
    clean = {
        seed: fits[seed][[metric, "critic", "nll"]].apply(pd.to_numeric, errors="coerce").dropna()
        for seed in sorted(fits, key=_seed_key)
    }
    if not any(len(f) for f in clean.values()):
        raise RactError(f"critic fit: no user has a defined {metric}")
    return clean


# the critic fit's panels, left to right: column -> (its name in the title, its x axis label)
_FIT_PANELS = {
    "critic": ("critic", "critic prediction (sigmoid output)"),
    "nll": ("NLL", "actor's NLL feature (nats)"),
}


def _draw_fit_panel(ax, clean: Mapping, pooled: pd.DataFrame, metric: str, column: str) -> float:
    """One panel of `plot_critic_fit`: `metric` against `column`, a colour per seed; returns
    the pooled Pearson r shown in its title."""
    for i, (seed, f) in enumerate(clean.items()):
        ax.scatter(
            f[column],
            f[metric],
            s=10,
            alpha=0.6,
            color=_color(i),
            lw=0,
            label=f"seed {seed} (r = {pearson(f[column], f[metric]):+.2f}, {len(f)} users)",
        )
    r = pearson(pooled[column], pooled[metric])
    name, xlabel = _FIT_PANELS[column]
    ax.set_title(f"{name}: Pearson r = {r:+.3f} ({len(pooled)} user-seeds)", fontsize=10)
    ax.set_xlabel(xlabel, fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=9)
    # below the panel: inside it, the legend would hide points
    ax.legend(
        fontsize=8.5,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.15),
        frameon=False,
        markerscale=1.5,
    )
    return r


# ----------------------------------------------------------------------------------------------
# Helpers


def gain_by_activity(activity, a, b, n_groups: int = 4) -> pd.DataFrame:
    """Per-user b - a grouped into quantiles of user activity (items known per user): one row
    per group with its item range, users, mean difference and its standard error."""
    frame = pd.DataFrame(
        {
            "activity": np.asarray(activity, dtype=float),
            "diff": np.asarray(b, dtype=float) - np.asarray(a, dtype=float),
        }
    )
    frame = frame.dropna()
    if len(frame) < n_groups:
        raise RactError(
            f"gain by activity: {len(frame)} users with values, need at least {n_groups}"
        )
    # ranks, not raw counts, so that tied activities still give groups of equal size
    frame["group"] = pd.qcut(frame["activity"].rank(method="first"), n_groups, labels=False)
    rows = []
    for g, part in frame.groupby("group"):
        n = len(part)
        rows.append(
            {
                "group": f"Q{g + 1}",
                "min_items": int(part["activity"].min()),
                "max_items": int(part["activity"].max()),
                "users": n,
                "mean_diff": part["diff"].mean(),
                "se": part["diff"].std(ddof=1) / math.sqrt(n) if n > 1 else math.nan,
            }
        )
    return pd.DataFrame(rows)


def gain_of_test(test: Mapping, ndcg: Mapping, users: pd.DataFrame) -> pd.DataFrame:
    """`gain_by_activity` of a paired test's b - a: each user's test NDCG@100 averaged over
    seeds (`ndcg`, from `per_user_ndcg`), users grouped by the items known of them (`users`,
    its first table)."""
    mean_a, mean_b = (np.nanmean(ndcg[test[k]], axis=0) for k in ("a", "b"))
    return gain_by_activity(users["n_input"] + users["n_holdout"], mean_a, mean_b)


def plot_gain_by_activity(
    groups: pd.DataFrame,
    path_png,
    path_pdf=None,
    *,
    label: str = "RaCT - Mult-VAE",
    metric: str = "NDCG@100",
) -> None:
    """Bars of the mean per-user difference per activity group (from `gain_by_activity`), with
    one standard error, and a zero line."""
    if groups.empty:
        raise RactError("gain by activity: no groups to plot")
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    ax.bar(x, groups["mean_diff"], yerr=groups["se"].fillna(0), capsize=4, color=_color(4))
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_xticks(
        x,
        [
            f"{r.group}\n{r.min_items}-{r.max_items} items\n{r.users} users"
            for r in groups.itertuples()
        ],
    )
    ax.set_xlabel("user activity quartile (items known per test user)")
    ax.set_ylabel(f"{label}, {metric} per user")
    ax.set_title(f"{label}: mean per-user difference in {metric} (± 1 s.e.)")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path_png, path_pdf)


def _save(fig: Figure, path_png, path_pdf) -> None:
    try:
        with atomic_path(path_png) as tmp:
            fig.savefig(tmp, format="png", dpi=150)
        if path_pdf is not None:
            with atomic_path(path_pdf) as tmp:
                fig.savefig(tmp, format="pdf")
    finally:
        fig.clear()


def _color(i: int):
    palette = (
        "#1f77b4",
        "#d62728",
        "#2ca02c",
        "#ff7f0e",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    )
    return palette[i % len(palette)]


def _seed_key(seed):
    try:
        return (0, int(seed), "")
    except (TypeError, ValueError):
        return (1, 0, str(seed))


def _summary_name(summary, index: int) -> str:
    parts = [f"#{index}"]
    for key in ("model", "variant", "seed", "split"):
        if isinstance(summary, Mapping) and key in summary:
            parts.append(f"{key}={summary[key]}")
    return "(" + ", ".join(parts) + ")"


def _as_float(value) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
