"""Binarise, filter and split interactions into sparse split files (SPEC 1).

Output folder layout (all rows are users, all columns the same item index):
    train.npz                  training users' full rows (strong) / every user's train part (weak)
    validation_input.npz       what the model sees for validation users (fold-in)
    validation_holdout.npz     what it must rank (held-out)
    test_input.npz, test_holdout.npz
    test_exclude.npz           weak protocol only: items masked at test time (train + valid)
    users.csv                  split, index (row in that split's matrices), user (original id)
    items.csv                  index, item (original id)
    manifest.json              settings, counts, content hash
Matrices are scipy CSR float32 written with `scipy.sparse.save_npz`. No dense users x items
matrix is ever built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RactError, check_settings, writing
from ..formats import SPLIT_FORMAT_VERSION
from ..io import config_dict, json_text

log = logging.getLogger("ract.prepare")

PROTOCOLS = ("strong", "weak")
EVAL_SPLITS = ("validation", "test")
# A split is written to a temporary folder beside its destination, named after its owner
# (".{name}.ract-{pid}@{host}.{random}"), so that the next prepare into the same parent can
# tell the leftovers of a killed run from the folder of a run still writing: it removes one
# whose owner on this host is gone, and, since a process on another host of a shared file
# system cannot be asked (nor one whose pid was reused), any a day old. Writing the files takes
# seconds to minutes, so a day is far longer than any live run holds its folder.
STALE_TEMPORARY_SECONDS = 24 * 3600
TEMPORARY = re.compile(r"\..+\.ract-(?P<pid>\d+)@(?P<host>.+)\.[^.]+")


@dataclass(frozen=True)
class PrepareConfig:
    """Preprocessing settings. Defaults follow the paper on MovieLens (SPEC 1)."""

    rating_threshold: float | None = 3.5  # keep rating > threshold; None keeps every row
    min_user_count: int = 5  # users with fewer items are removed (after item filtering)
    min_item_count: int = 0  # items with fewer users are removed first
    protocol: str = "strong"
    heldout_users: float = 0.1  # strong: validation and test users each; < 1 fraction, else count
    heldout_proportion: float = 0.2  # strong: share of a held-out user's items to predict
    min_items_to_split: int = 5  # strong: users with fewer items keep all as fold-in
    weak_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # weak: train/valid/test per user
    seed: int = 98765

    def __post_init__(self):
        object.__setattr__(self, "weak_ratios", tuple(float(r) for r in self.weak_ratios))
        check_settings(
            self,
            [
                (self.protocol in PROTOCOLS, "protocol", f"one of {', '.join(PROTOCOLS)}"),
                (self.min_user_count >= 0, "min_user_count", "an integer >= 0"),
                (self.min_item_count >= 0, "min_item_count", "an integer >= 0"),
                (
                    self.heldout_users > 0
                    and (self.heldout_users < 1 or float(self.heldout_users).is_integer()),
                    "heldout_users",
                    "a fraction in (0, 1) or a whole number of users >= 1",
                ),
                (0 < self.heldout_proportion < 1, "heldout_proportion", "a number in (0, 1)"),
                (self.min_items_to_split >= 1, "min_items_to_split", "an integer >= 1"),
                (
                    len(self.weak_ratios) == 3
                    and all(r >= 0 for r in self.weak_ratios)
                    and math.isclose(sum(self.weak_ratios), 1.0)
                    and self.weak_ratios[0] > 0,
                    "weak_ratios",
                    "three non-negative numbers summing to 1 with train > 0",
                ),
            ],
        )


def binarise_and_filter(frame: pd.DataFrame, cfg: PrepareConfig, source: str = "input"):
    """Rows kept as positive interactions, duplicates removed, then the count filters.

    Items are filtered before users, one pass each, as in vae_cf.
    """
    n_rows = len(frame)
    repeats = int(frame.duplicated(["user", "item"]).sum())
    if repeats:
        log.info(
            "%s: %s rows repeat a user-item pair of an earlier row; each pair is one "
            "interaction, %s",
            source,
            f"{repeats:,}",
            "kept if any of its ratings is > rating_threshold (the highest decides)"
            if cfg.rating_threshold is not None
            else "kept once",
        )
    if cfg.rating_threshold is not None:
        if frame["rating"].isna().all():
            raise RactError(
                f"{source}: has no ratings (implicit data); set rating_threshold "
                "to null to keep every interaction"
            )
        top = frame["rating"].max()
        frame = frame[frame["rating"] > cfg.rating_threshold]
        _warn_threshold(cfg.rating_threshold, top, len(frame) / max(n_rows, 1), source)
    frame = frame.drop_duplicates(["user", "item"])[["user", "item"]]
    stages = [("rating_threshold", len(frame))]
    if cfg.min_item_count > 0:
        counts = frame["item"].map(frame["item"].value_counts())
        frame = frame[counts >= cfg.min_item_count]
        stages.append(("min_item_count", len(frame)))
    if cfg.min_user_count > 0:
        counts = frame["user"].map(frame["user"].value_counts())
        frame = frame[counts >= cfg.min_user_count]
        stages.append(("min_user_count", len(frame)))
    if frame.empty:
        trail = ", ".join(f"{name}: {n} rows left" for name, n in stages)
        raise RactError(
            f"{source}: no interactions left after filtering ({trail}); lower "
            "rating_threshold, min_user_count or min_item_count"
        )
    return frame.reset_index(drop=True)


def _warn_threshold(threshold: float, top: float, kept: float, source: str) -> None:
    """The default threshold (3.5, for 1-5 stars) is wrong on another rating scale: say so when
    it keeps nothing or under a quarter of the rows."""
    fix = (
        "set rating_threshold for this rating scale (`datasets.<name>.prepare` in the "
        "config, --rating-threshold), or null to keep every row"
    )
    if threshold >= top:
        log.warning(
            "%s: rating_threshold %g is at or above the highest rating, %g: no row is kept; %s",
            source,
            threshold,
            top,
            fix,
        )
    elif kept < 0.25:
        log.warning(
            "%s: rating_threshold %g keeps %.1f%% of the rows (ratings up to %g); %s",
            source,
            threshold,
            100 * kept,
            top,
            fix,
        )


def _codes(values: pd.Series, categories) -> np.ndarray:
    return pd.Categorical(values, categories=categories).codes.astype(np.int64)


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    data = np.ones(len(rows), dtype=np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))
    m.sum_duplicates()
    m.sort_indices()
    return m


def _position_in_user(user_codes: np.ndarray, rng: np.random.Generator):
    """Random rank of each row within its user (0..n_u-1) and the user's row count, vectorised."""
    order = np.lexsort((rng.random(len(user_codes)), user_codes))
    sorted_users = user_codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    rank_sorted = np.arange(len(order)) - np.repeat(starts, counts)
    rank = np.empty_like(rank_sorted)
    rank[order] = rank_sorted
    n_user = np.empty_like(rank_sorted)
    n_user[order] = np.repeat(counts, counts)
    return rank, n_user


def _n_heldout(cfg: PrepareConfig, n_users: int, source: str) -> int:
    h = cfg.heldout_users
    n = int(round(h * n_users)) if h < 1 else int(h)
    if n < 1 or 2 * n >= n_users:
        raise RactError(
            f"setting heldout_users: {h!r} gives {n} validation and {n} test users, "
            f"but {source} has {n_users} users after filtering; expected at least "
            "one held-out user each and some training users left"
        )
    return n


def split_strong(frame: pd.DataFrame, cfg: PrepareConfig, source: str = "input"):
    """Disjoint train / validation / test users; items restricted to those of training users;
    validation and test users' items split into fold-in and held-out."""
    rng = np.random.default_rng(cfg.seed)
    users = np.sort(frame["user"].unique())
    n_h = _n_heldout(cfg, len(users), source)
    perm = users[rng.permutation(len(users))]
    groups = {
        "train": perm[: len(users) - 2 * n_h],
        "validation": perm[len(users) - 2 * n_h : len(users) - n_h],
        "test": perm[len(users) - n_h :],
    }
    train_rows = frame[frame["user"].isin(groups["train"])]
    items = np.sort(train_rows["item"].unique())
    train_users = np.sort(groups["train"])
    matrices = {
        "train": _csr(
            _codes(train_rows["user"], train_users),
            _codes(train_rows["item"], items),
            len(train_users),
            len(items),
        )
    }
    user_tables = [
        pd.DataFrame({"split": "train", "index": np.arange(len(train_users)), "user": train_users})
    ]
    for split in EVAL_SPLITS:
        rows = frame[frame["user"].isin(groups[split]) & frame["item"].isin(items)]
        split_users = np.sort(rows["user"].unique())  # users left with no known item drop out
        u = _codes(rows["user"], split_users)
        i = _codes(rows["item"], items)
        rank, n_u = _position_in_user(u, rng)
        n_out = np.floor(cfg.heldout_proportion * n_u).astype(np.int64)
        held = (n_u >= cfg.min_items_to_split) & (rank < n_out)
        matrices[f"{split}_input"] = _csr(u[~held], i[~held], len(split_users), len(items))
        matrices[f"{split}_holdout"] = _csr(u[held], i[held], len(split_users), len(items))
        user_tables.append(
            pd.DataFrame(
                {"split": split, "index": np.arange(len(split_users)), "user": split_users}
            )
        )
    return matrices, pd.concat(user_tables, ignore_index=True), items


def split_weak(frame: pd.DataFrame, cfg: PrepareConfig, source: str = "input"):
    """Every user's interactions split at random into train / valid / test (RecBole's default).
    The model input is the train part; at test time train and valid items are excluded."""
    rng = np.random.default_rng(cfg.seed)
    users = np.sort(frame["user"].unique())
    items = np.sort(frame["item"].unique())
    u = _codes(frame["user"], users)
    i = _codes(frame["item"], items)
    rank, n_u = _position_in_user(u, rng)
    _, r_valid, r_test = cfg.weak_ratios
    n_test = np.floor(r_test * n_u)
    n_valid = np.floor(r_valid * n_u)
    part = np.where(rank < n_test, 2, np.where(rank < n_test + n_valid, 1, 0))
    shape = (len(users), len(items))
    train = _csr(u[part == 0], i[part == 0], *shape)
    valid = _csr(u[part == 1], i[part == 1], *shape)
    test = _csr(u[part == 2], i[part == 2], *shape)
    matrices = {
        "train": train,
        "validation_input": train,
        "validation_holdout": valid,
        "test_input": train,
        "test_holdout": test,
        "test_exclude": train + valid,
    }
    user_table = pd.concat(
        [
            pd.DataFrame({"split": s, "index": np.arange(len(users)), "user": users})
            for s in ("train", *EVAL_SPLITS)
        ],
        ignore_index=True,
    )
    return matrices, user_table, items


def n_evaluable(holdout: sp.csr_matrix) -> int:
    """Users of a held-out split with an item to predict; the others have no metric."""
    return int((np.diff(holdout.indptr) > 0).sum())


def _check_evaluable(matrices: dict[str, sp.csr_matrix], cfg: PrepareConfig, source: str):
    """Refuse a split with no validation or no test user to evaluate: training would select
    its epoch on NaN and evaluation would report nothing."""
    counts = {
        s: (n_evaluable(matrices[f"{s}_holdout"]), matrices[f"{s}_holdout"].shape[0])
        for s in EVAL_SPLITS
    }
    if all(n for n, _ in counts.values()):
        return
    found = " and ".join(f"{n} of {total} {s} users" for s, (n, total) in counts.items())
    fix = (
        "lower min_items_to_split (--min-items-to-split): users with fewer items keep all "
        "as fold-in"
        if cfg.protocol == "strong"
        else "raise the valid and test parts of weak_ratios (--weak-ratios): a user's part is "
        "floor(ratio x the user's items)"
    )
    raise RactError(f"{source}: the split cannot be evaluated: {found} have held-out items; {fix}")


def content_hash(matrices: dict[str, sp.csr_matrix], users: pd.DataFrame, items) -> str:
    """sha256 over the split structure and id maps: equal hash, equal data."""
    h = hashlib.sha256()
    for name in sorted(matrices):
        m = matrices[name]
        h.update(f"{name}:{m.shape}".encode())
        h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
    h.update(users.to_csv(index=False).encode())
    h.update(pd.Series(items).astype(str).str.cat(sep="\n").encode())
    return h.hexdigest()


def check_out_dir(out_dir) -> None:
    """Refuse to write a split over anything `ract prepare` did not write: `out_dir` must be
    new, empty, or a split folder (a manifest.json of ours), which a new split replaces.

    The command line checks this before reading anything; `prepare_split` does not, as the
    workflow's rule owns its folder and Snakemake deletes the manifest.json before a rerun."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RactError(f"{out_dir}: an existing file; expected a folder for the split files")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not _is_split_folder(out_dir):
        raise RactError(
            f"{out_dir}: a folder of other files (no manifest.json of `ract "
            "prepare`); expected a new or empty folder, or a split folder to replace"
        )


def _is_split_folder(path: Path) -> bool:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"format_version", "content_hash"} <= manifest.keys()


def temporary_folder(out_dir: Path) -> Path:
    """A new temporary folder beside `out_dir`, named after this process (see TEMPORARY)."""
    return Path(
        tempfile.mkdtemp(
            dir=out_dir.parent,
            prefix=f".{out_dir.name}.ract-{os.getpid()}@{socket.gethostname()}.",
        )
    )


def remove_stale_temporaries(parent: Path) -> None:
    """Remove the temporary folders in `parent` that killed runs left (see TEMPORARY)."""
    for path in parent.iterdir():
        owner = TEMPORARY.fullmatch(path.name)
        if owner and path.is_dir() and _stale(path, int(owner["pid"]), owner["host"]):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left by a prepare that was killed", path)


def _stale(path: Path, pid: int, host: str) -> bool:
    try:
        if time.time() - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
            return True
    except FileNotFoundError:  # its owner finished meanwhile
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, run by another user
        pass
    return False


def prepare_split(
    frame: pd.DataFrame,
    cfg: PrepareConfig,
    out_dir,
    *,
    source: str = "input",
    extra: dict | None = None,
) -> dict:
    """Binarise, filter and split `frame` (columns user, item, rating); write the split folder.

    Files appear in `out_dir` only once all of them are complete: they are written to a
    temporary folder beside it first. Returns the manifest.
    """
    kept = binarise_and_filter(frame, cfg, source)
    split = split_strong if cfg.protocol == "strong" else split_weak
    matrices, users, items = split(kept, cfg, source)
    _check_evaluable(matrices, cfg, source)
    counts = {
        name: {"users": m.shape[0], "interactions": int(m.nnz)} for name, m in matrices.items()
    }
    manifest = {
        "format_version": SPLIT_FORMAT_VERSION,
        "source": source,
        **(extra or {}),
        "settings": config_dict(cfg),
        "n_items": len(items),
        "n_users": int(kept["user"].nunique()),
        "n_interactions_kept": len(kept),
        "n_rows_read": len(frame),
        "matrices": counts,
        "content_hash": content_hash(matrices, users, items),
    }
    _write_split(Path(out_dir), matrices, users, items, manifest)
    return manifest


def _write_split(out_dir: Path, matrices: dict, users, items, manifest: dict) -> None:
    """Write the split files to a temporary folder beside `out_dir`, then move them in, the
    manifest last."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir.parent)
    with writing(out_dir):  # a full disk names the split folder, not a temporary file
        tmp = temporary_folder(out_dir)
        try:
            for name, m in matrices.items():
                sp.save_npz(tmp / f"{name}.npz", m)
            users.to_csv(tmp / "users.csv", index=False)
            pd.DataFrame({"index": np.arange(len(items)), "item": items}).to_csv(
                tmp / "items.csv", index=False
            )
            (tmp / "manifest.json").write_text(json_text(manifest))
            out_dir.mkdir(exist_ok=True)
            # The manifest goes last and comes out first: a folder with a manifest is complete.
            (out_dir / "manifest.json").unlink(missing_ok=True)
            if "test_exclude" not in matrices:
                (out_dir / "test_exclude.npz").unlink(missing_ok=True)
            for f in sorted(tmp.iterdir(), key=lambda p: p.name == "manifest.json"):
                f.replace(out_dir / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
