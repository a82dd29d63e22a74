"""Binarise, filter, split: invariants of both protocols and refusals of bad settings."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ract.data.prepare import PrepareConfig, binarise_and_filter, prepare_split
from ract.data.splits import load_split
from ract.errors import RactError


def test_binarise_and_filter_order_and_threshold():
    frame = pd.DataFrame(
        {
            "user": [1, 1, 1, 2, 2, 3, 3, 3],
            "item": [10, 11, 12, 10, 11, 10, 12, 12],
            "rating": [5, 4, 3, 5, 3.5, 4, 5, 5],
        }
    )
    kept = binarise_and_filter(
        frame, PrepareConfig(rating_threshold=3.5, min_user_count=2, min_item_count=0)
    )
    # user 2 keeps only item 10 (3.5 is not > 3.5) and is filtered; user 3's duplicate collapses
    assert sorted(map(tuple, kept[["user", "item"]].to_numpy())) == [
        (1, 10),
        (1, 11),
        (3, 10),
        (3, 12),
    ]
    # items are filtered before users: only item 10 has two users, so every user is left with
    # one item; users first would have kept (1, 10) and (3, 10)
    kept = binarise_and_filter(
        frame, PrepareConfig(rating_threshold=3.5, min_user_count=1, min_item_count=2)
    )
    assert sorted(map(tuple, kept[["user", "item"]].to_numpy())) == [(1, 10), (2, 10), (3, 10)]
    with pytest.raises(RactError, match="min_item_count: 3 rows left, min_user_count: 0"):
        binarise_and_filter(
            frame, PrepareConfig(rating_threshold=3.5, min_user_count=2, min_item_count=2)
        )


def test_implicit_data_keeps_every_row_without_threshold():
    frame = pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 1], "rating": [np.nan] * 3})
    assert (
        len(binarise_and_filter(frame, PrepareConfig(rating_threshold=None, min_user_count=0)))
        == 3
    )
    with pytest.raises(RactError, match="rating_threshold"):
        binarise_and_filter(frame, PrepareConfig(rating_threshold=3.5))


def test_a_threshold_off_the_rating_scale_is_warned(caplog):
    """On a 0.5-4 star scale the default 3.5 keeps only the top star; at or above the top
    rating it keeps nothing."""
    frame = pd.DataFrame(
        {
            "user": np.arange(100),
            "item": np.arange(100) % 7,
            "rating": np.repeat([0.5, 1, 2, 3, 4], 20),
        }
    )
    with caplog.at_level("WARNING", logger="ract.prepare"):
        binarise_and_filter(frame, PrepareConfig(rating_threshold=3.5, min_user_count=0))
    assert "rating_threshold 3.5 keeps 20.0% of the rows (ratings up to 4)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ract.prepare"), pytest.raises(RactError):
        binarise_and_filter(frame, PrepareConfig(rating_threshold=4, min_user_count=0))
    assert "rating_threshold 4 is at or above the highest rating, 4" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ract.prepare"):
        binarise_and_filter(frame, PrepareConfig(rating_threshold=1.5, min_user_count=0))
    assert caplog.text == ""  # 60% kept: nothing to say


def test_merged_duplicate_pairs_are_counted_with_their_rule(caplog):
    frame = pd.DataFrame(
        {"user": [1, 1, 1, 2, 2], "item": [10, 10, 10, 11, 11], "rating": [2, 5, 3, 1, 2]}
    )
    with caplog.at_level("INFO", logger="ract.prepare"):
        kept = binarise_and_filter(
            frame, PrepareConfig(rating_threshold=3.5, min_user_count=0), "r.csv"
        )
    assert kept[["user", "item"]].values.tolist() == [[1, 10]]  # the highest rating decides
    assert (
        "r.csv: 3 rows repeat a user-item pair of an earlier row; each pair is one "
        "interaction, kept if any of its ratings is > rating_threshold"
    ) in caplog.text


def test_strong_split_invariants(interactions, tmp_path):
    cfg = PrepareConfig(heldout_users=0.1, seed=7)
    manifest = prepare_split(interactions, cfg, tmp_path / "split")
    data = load_split(tmp_path / "split")
    users = pd.read_csv(tmp_path / "split" / "users.csv")
    by = {s: set(g["user"]) for s, g in users.groupby("split")}
    assert not (by["train"] & by["validation"]) and not (by["train"] & by["test"])
    assert not (by["validation"] & by["test"])
    n = len(binarise_and_filter(interactions, cfg)["user"].unique())
    assert len(by["validation"]) == len(by["test"]) == round(0.1 * n)
    # items: exactly those of training users; every column has a training interaction
    assert (np.asarray(data.train.sum(axis=0)).ravel() > 0).all()
    assert data.train.shape[1] == manifest["n_items"]
    for split in ("validation", "test"):
        es = data.eval_split(split)
        assert es.input.multiply(es.holdout).nnz == 0  # fold-in and held-out disjoint
        n_in = np.asarray(es.input.sum(axis=1)).ravel()
        n_out = np.asarray(es.holdout.sum(axis=1)).ravel()
        total = n_in + n_out
        big = total >= cfg.min_items_to_split
        np.testing.assert_array_equal(n_out[big], np.floor(0.2 * total[big]))
        assert (n_out[~big] == 0).all()
    # id maps round-trip to the raw interactions
    items = pd.read_csv(tmp_path / "split" / "items.csv")["item"].to_numpy()
    train_users = users[users["split"] == "train"].sort_values("index")["user"].to_numpy()
    r, c = data.train.nonzero()
    pairs = set(zip(train_users[r], items[c]))
    pos = interactions[interactions["rating"] > 3.5]
    assert pairs == set(zip(pos["user"], pos["item"])) & {(u, i) for u, i in pairs}
    assert pairs == {(u, i) for u, i in zip(pos["user"], pos["item"]) if u in by["train"]}


def test_same_seed_same_split_other_seed_differs(interactions, tmp_path):
    a = prepare_split(interactions, PrepareConfig(seed=1), tmp_path / "a")
    b = prepare_split(interactions, PrepareConfig(seed=1), tmp_path / "b")
    c = prepare_split(interactions, PrepareConfig(seed=2), tmp_path / "c")
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]


def test_heldout_users_as_count(interactions, tmp_path):
    m = prepare_split(interactions, PrepareConfig(heldout_users=17), tmp_path / "s")
    assert m["matrices"]["validation_input"]["users"] == 17
    assert m["matrices"]["test_input"]["users"] == 17


def test_weak_split_invariants(interactions, tmp_path):
    cfg = PrepareConfig(protocol="weak", seed=3)
    prepare_split(interactions, cfg, tmp_path / "w")
    data = load_split(tmp_path / "w")
    train, val, test = data.train, data.validation.holdout, data.test.holdout
    assert train.shape == val.shape == test.shape
    assert train.multiply(val).nnz == 0 and train.multiply(test).nnz == 0
    assert val.multiply(test).nnz == 0
    n = np.asarray((train + val + test).sum(axis=1)).ravel()
    np.testing.assert_array_equal(np.asarray(test.sum(axis=1)).ravel(), np.floor(0.1 * n))
    assert (data.test.exclude != (train + val)).nnz == 0
    assert (data.validation.input != train).nnz == 0


def test_matrices_are_sparse_csr(interactions, tmp_path):
    prepare_split(interactions, PrepareConfig(), tmp_path / "s")
    m = sp.load_npz(tmp_path / "s" / "train.npz")
    assert sp.issparse(m) and m.format == "csr" and m.dtype == np.float32


def test_manifest_records_settings_and_counts(interactions, tmp_path):
    m = prepare_split(interactions, PrepareConfig(), tmp_path / "s", source="x.csv")
    on_disk = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert on_disk == m
    assert m["settings"]["rating_threshold"] == 3.5 and len(m["content_hash"]) == 64
    assert m["source"] == "x.csv"


@pytest.mark.parametrize(
    "kwargs,setting",
    [
        (dict(protocol="random"), "protocol"),
        (dict(min_user_count=-1), "min_user_count"),
        (dict(heldout_users=0), "heldout_users"),
        (dict(heldout_users=2.5), "heldout_users"),
        (dict(heldout_proportion=1.0), "heldout_proportion"),
        (dict(weak_ratios=(0.5, 0.1, 0.1)), "weak_ratios"),
    ],
)
def test_impossible_settings_rejected(kwargs, setting):
    with pytest.raises(RactError, match=f"setting {setting}"):
        PrepareConfig(**kwargs)


def test_empty_after_filtering_refused_and_nothing_written(interactions, tmp_path):
    with pytest.raises(RactError, match="no interactions left after filtering.*min_user_count"):
        prepare_split(
            interactions,
            PrepareConfig(min_user_count=10_000),
            tmp_path / "s",
            source="ratings.csv",
        )
    assert not (tmp_path / "s").exists()
    assert list(tmp_path.iterdir()) == []


def test_too_many_heldout_users_refused(interactions, tmp_path):
    with pytest.raises(RactError, match="heldout_users.*240 users"):
        prepare_split(interactions, PrepareConfig(heldout_users=120), tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_previous_split(interactions, tmp_path):
    prepare_split(interactions, PrepareConfig(protocol="weak"), tmp_path / "s")
    assert (tmp_path / "s" / "test_exclude.npz").exists()
    prepare_split(interactions, PrepareConfig(), tmp_path / "s")
    assert not (tmp_path / "s" / "test_exclude.npz").exists()
    load_split(tmp_path / "s")


def test_incomplete_split_folder_refused(interactions, tmp_path):
    prepare_split(interactions, PrepareConfig(), tmp_path / "s")
    (tmp_path / "s" / "test_holdout.npz").unlink()
    with pytest.raises(RactError, match="test_holdout.npz: file not found"):
        load_split(tmp_path / "s")
    with pytest.raises(RactError, match="manifest.json: file not found"):
        load_split(tmp_path / "nothing")


@pytest.mark.parametrize(
    "cfg, setting",
    [
        (PrepareConfig(min_items_to_split=100_000), "min_items_to_split"),
        (PrepareConfig(protocol="weak", weak_ratios=(1, 0, 0)), "weak_ratios"),
    ],
)
def test_split_that_cannot_be_evaluated_refused_and_nothing_written(
    interactions, tmp_path, cfg, setting
):
    with pytest.raises(
        RactError,
        match=rf"x.csv: the split cannot be evaluated: 0 of \d+ "
        rf"validation users .*{setting}",
    ):
        prepare_split(interactions, cfg, tmp_path / "s", source="x.csv")
    assert list(tmp_path.iterdir()) == []
