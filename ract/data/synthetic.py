"""Synthetic interaction data at any scale, written in a real raw format (MovieLens
`ratings.csv` or Netflix Prize `combined_data_*.txt`), so that benchmarks exercise the readers
and the rating binarisation as well as training.

Shape: `n_users` users, `n_items` items and `n_interactions` positive interactions (ratings
above 3.5), each user with at least `min_user_items` of them, so that the paper's preparation
(binarise at 3.5, users with >= 5 items) keeps exactly `n_users` x (about) `n_items` x
`n_interactions`. On top, `low_rating_share * n_interactions` rows carry ratings of 3.5 or less,
which binarisation drops.

- Item popularity follows a power law with a flattened head (Zipf-Mandelbrot): the item of
  popularity rank r is drawn with weight (r + item_offset) ** -item_exponent; which item id
  gets which rank is random. The defaults put the most popular ML-20M-shaped item in about
  half of all users' histories and the least popular in about 70.
- Items per user follow a log-normal spread (sigma `user_sigma`) above `min_user_items`, scaled
  to the requested total, so a few users have thousands of items and most have tens.
- Each user's items are drawn from the popularity weights without replacement (successive
  sampling), so a user never rates an item twice.

Everything is vectorised numpy (no Python loop over users or rows) and fixed by `seed`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RactError, check_settings
from ..io import atomic_path, config_dict

FORMATS = {"ml-csv": "ratings.csv", "netflix": "combined_data_1.txt"}

# Shapes after the paper's preparation (SPEC 5). MovieLens ids and half-star ratings for
# ML-20M; Netflix writes its own format with whole-star ratings.
PRESETS = {
    "ml-20m": dict(n_users=136_677, n_items=20_108, n_interactions=10_000_000, format="ml-csv"),
    "netflix": dict(n_users=463_435, n_items=17_769, n_interactions=56_900_000, format="netflix"),
}

# A user's items beyond this share of all items are drawn with exact Gumbel top-k over every
# item instead of rejection rounds, which slow down once a user holds most of the popular mass.
_DENSE_USER_SHARE = 0.25
_ROWS_PER_WRITE = 2_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int
    n_items: int
    n_interactions: int  # positive interactions (rating > 3.5) over all users
    seed: int = 0
    item_exponent: float = 1.0  # power-law exponent of item popularity
    item_offset: float = 20.0  # flattens the head: weight (rank + offset) ** -exponent
    user_sigma: float = 1.0  # log-normal spread of the number of items per user
    min_user_items: int = 5  # positive items every user has at least
    low_rating_share: float = 0.05  # extra rows rated <= 3.5, per positive interaction
    format: str = "ml-csv"

    def __post_init__(self):
        check_settings(
            self,
            [
                (self.n_users >= 1, "n_users", "an integer >= 1"),
                (self.n_items >= 1, "n_items", "an integer >= 1"),
                (self.min_user_items >= 1, "min_user_items", "an integer >= 1"),
                (self.item_exponent >= 0, "item_exponent", "a number >= 0"),
                (self.item_offset >= 0, "item_offset", "a number >= 0"),
                (self.user_sigma >= 0, "user_sigma", "a number >= 0"),
                (0 <= self.low_rating_share <= 1, "low_rating_share", "a number in [0, 1]"),
                (self.format in FORMATS, "format", f"one of {', '.join(FORMATS)}"),
            ],
        )
        if self.min_user_items > self.n_items:
            raise RactError(
                f"setting min_user_items: {self.min_user_items} is more than "
                f"n_items ({self.n_items})"
            )
        low = self.min_user_items * self.n_users
        if self.n_interactions < low:
            raise RactError(
                f"setting n_interactions: {self.n_interactions:,} is fewer than "
                f"n_users x min_user_items = {low:,}"
            )
        if self.n_rows > self.n_users * self.n_items:
            raise RactError(
                f"setting n_interactions: {self.n_interactions:,} positive plus "
                f"{self.n_rows - self.n_interactions:,} low-rated rows do not fit in n_users x "
                f"n_items = {self.n_users * self.n_items:,} distinct pairs; lower "
                "n_interactions or low_rating_share, or raise n_users or n_items"
            )

    @property
    def n_rows(self) -> int:
        """Rows in the written file: positive plus low-rated."""
        return self.n_interactions + round(self.low_rating_share * self.n_interactions)


def synthetic_config(preset: str | None = None, scale: float = 1.0, **settings) -> SyntheticConfig:
    """Settings from a preset (`ml-20m`, `netflix`) with users and interactions scaled by
    `scale` (items kept), then any explicit settings on top; without a preset, n_users,
    n_items and n_interactions are required."""
    if preset is not None and preset not in PRESETS:
        raise RactError(f"setting preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    if not scale > 0:
        raise RactError(f"setting scale: expected a number > 0, got {scale!r}")
    known = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise RactError(
            f"setting {unknown[0]}: unknown; expected one of preset, scale, "
            f"{', '.join(sorted(known))}"
        )
    base = dict(PRESETS[preset]) if preset else {}
    if preset:
        base["n_users"] = max(1, round(base["n_users"] * scale))
        base["n_interactions"] = round(base["n_interactions"] * scale)
    base.update({k: v for k, v in settings.items() if v is not None})
    missing = [k for k in ("n_users", "n_items", "n_interactions") if k not in base]
    if missing:
        raise RactError(
            f"setting {missing[0]}: required without a preset (presets: {', '.join(PRESETS)})"
        )
    return SyntheticConfig(**base)


def _apportion(total: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Integers proportional to `weights`, each <= cap, summing to `total` (water-filling)."""
    lo, hi = 0.0, total / weights.min()
    for _ in range(100):  # scale t with sum(min(cap, t * w)) == total
        t = (lo + hi) / 2
        if np.minimum(cap, t * weights).sum() < total:
            lo = t
        else:
            hi = t
    share = np.minimum(cap, hi * weights)
    counts = np.floor(share).astype(np.int64)
    short = total - int(counts.sum())
    room = np.where(counts < cap, share - counts, -1.0)
    counts[np.argsort(-room, kind="stable")[:short]] += 1
    return counts


def _draw_sparse(
    counts: np.ndarray,
    users: np.ndarray,
    cdf: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Successive sampling for light users by rounds of draws with replacement: repeats of an
    item the user already has are rejected, and each round draws enough for the expected
    rejection rate. Returns (keys user * n_items + item, rank of the draw within the user)."""
    n_items = len(cdf)
    short = np.zeros(len(counts), dtype=np.int64)
    short[users] = counts[users]
    mass = np.zeros(len(counts))  # popularity mass each user already holds
    have = np.zeros(len(counts), dtype=np.int64)
    picked = np.empty(0, dtype=np.int64)  # sorted keys
    keys_out, ranks_out = [picked], [picked]
    while (need := np.flatnonzero(short)).size:
        draws = np.ceil(1.1 * short[need] / np.maximum(1.0 - mass[need], 1e-3)).astype(np.int64)
        u = np.repeat(need, draws + 2)
        item = np.minimum(np.searchsorted(cdf, rng.random(len(u)), side="right"), n_items - 1)
        keys = u * n_items + item
        if picked.size:  # already held from an earlier round
            at = np.minimum(np.searchsorted(picked, keys), picked.size - 1)
            keys = keys[picked[at] != keys]
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # first draw of each new pair, in draw order (user blocks)
        u = keys // n_items
        start = np.searchsorted(u, u, side="left")  # u is sorted: each user's block start
        rank = np.arange(len(u)) - start
        take = rank < short[u]
        keys, u, rank = keys[take], u[take], rank[take]
        keys_out.append(keys)
        ranks_out.append(rank + have[u])
        added = np.bincount(u, minlength=len(counts))
        have += added
        short -= added
        mass += np.bincount(u, weights=weights[keys % n_items], minlength=len(counts))
        picked = np.sort(np.concatenate([picked, keys]))
    return np.concatenate(keys_out), np.concatenate(ranks_out)


def _draw_dense(
    counts: np.ndarray, users: np.ndarray, weights: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Successive sampling for heavy users, exactly, by Gumbel top-k over every item."""
    n_items = len(weights)
    keys_out, ranks_out = [], []
    per_chunk = max(1, (1 << 22) // n_items)
    log_w = np.log(weights)
    for lo in range(0, len(users), per_chunk):  # chunks of users bound memory
        chunk = users[lo : lo + per_chunk]
        noisy = log_w - np.log(-np.log(rng.random((len(chunk), n_items))))
        order = np.argsort(-noisy, axis=1, kind="stable")  # (U, n_items), draw order
        rank = np.broadcast_to(np.arange(n_items), order.shape)
        take = rank < counts[chunk][:, None]
        keys_out.append((chunk[:, None] * n_items + order)[take])
        ranks_out.append(rank[take])
    return np.concatenate(keys_out), np.concatenate(ranks_out)


def generate(cfg: SyntheticConfig) -> pd.DataFrame:
    """Interactions as a table (user index, item index, rating, timestamp), sorted by user and
    item. Ratings above 3.5 mark the `n_interactions` positives."""
    rng = np.random.default_rng(cfg.seed)
    n_users, n_items = cfg.n_users, cfg.n_items
    popularity = (np.arange(1, n_items + 1) + cfg.item_offset) ** -float(cfg.item_exponent)
    weights = np.empty(n_items)
    weights[rng.permutation(n_items)] = popularity / popularity.sum()
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]

    spread = rng.lognormal(0.0, cfg.user_sigma, n_users) if cfg.user_sigma else np.ones(n_users)
    extra = _apportion(
        cfg.n_rows - cfg.min_user_items * n_users, spread, n_items - cfg.min_user_items
    )
    counts = extra + cfg.min_user_items  # rows per user, positives and low-rated
    dense = counts > _DENSE_USER_SHARE * n_items
    parts = [_draw_sparse(counts, np.flatnonzero(~dense), cdf, weights, rng)]
    if dense.any():
        parts.append(_draw_dense(counts, np.flatnonzero(dense), weights, rng))
    keys = np.concatenate([p[0] for p in parts])
    rank = np.concatenate([p[1] for p in parts])  # random position of the row in its user
    order = np.argsort(keys, kind="stable")
    keys, rank = keys[order], rank[order]

    # Low-rated rows never take one of a user's first min_user_items draws, so every user
    # keeps at least that many positives after binarisation.
    n_low = cfg.n_rows - cfg.n_interactions
    low = np.zeros(len(keys), dtype=bool)
    low[rng.choice(np.flatnonzero(rank >= cfg.min_user_items), n_low, replace=False)] = True
    stars = np.where(
        low,
        rng.integers(1, 8, len(keys)) * 0.5,  # 0.5 .. 3.5
        rng.choice([4.0, 4.5, 5.0], len(keys), p=[0.45, 0.2, 0.35]),
    )
    if cfg.format == "netflix":  # whole stars: 1-3 low, 4-5 positive
        stars = np.where(low, np.ceil(stars / 1.25), np.where(stars > 4.0, 5.0, 4.0))
    timestamps = rng.integers(789_652_009, 1_427_784_002, len(keys))  # ML-20M's time range
    return pd.DataFrame(
        {"user": keys // n_items, "item": keys % n_items, "rating": stars, "timestamp": timestamps}
    )


def _ids(n: int, spread: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct increasing positive ids with gaps, as raw data sets have."""
    return np.sort(rng.choice(np.arange(1, spread * n + 1), n, replace=False))


def write_synthetic(cfg: SyntheticConfig, out_dir) -> Path:
    """Generate the data and write it under `out_dir` in `cfg.format`; returns the file (for
    `ract.data.readers.read_interactions` with format `cfg.format`). Written atomically."""
    frame = generate(cfg)
    rng = np.random.default_rng([cfg.seed, 1])
    user_ids = np.arange(1, cfg.n_users + 1)
    item_ids = _ids(cfg.n_items, 6, rng)
    path = Path(out_dir) / FORMATS[cfg.format]
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if cfg.format == "ml-csv":
            _write_mlcsv(frame, user_ids, item_ids, handle)
        else:
            _write_netflix(frame, user_ids, item_ids, handle)
    return path


def synthesize(cache_dir, **settings) -> tuple[Path, str]:
    """The counterpart of `ract.data.sources.fetch_dataset` for the workflow: write the data
    set that `settings` (those of `synthetic_config`) describe under
    cache_dir/synthetic/<hash of the settings>/ and return (file, reader format)."""
    cfg = synthetic_config(**settings)
    key = hashlib.sha256(json.dumps(config_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return write_synthetic(cfg, Path(cache_dir) / "synthetic" / key), cfg.format


def _digits(values: np.ndarray) -> np.ndarray:
    width = np.ones(len(values), dtype=np.int64)
    for k in range(1, len(str(int(values.max(initial=0))))):
        width += values >= 10**k
    return width


def _text(columns: list[np.ndarray]) -> bytes:
    """Comma-separated lines of non-negative integer columns and fixed-width byte-string
    columns (numpy `S` arrays), built as one byte buffer: pandas' to_csv takes ~10x longer."""
    n = len(columns[0])
    widths = [np.full(n, c.dtype.itemsize) if c.dtype.kind == "S" else _digits(c) for c in columns]
    lengths = sum(widths) + len(columns)  # a comma after each field but the last, then "\n"
    pos = np.cumsum(lengths) - lengths  # where each line starts
    buf = np.empty(int(lengths.sum()), dtype=np.uint8)
    for column, width in zip(columns, widths):
        if column.dtype.kind == "S":
            chars = np.frombuffer(column.tobytes(), dtype=np.uint8).reshape(n, -1)
            for j in range(chars.shape[1]):
                buf[pos + j] = chars[:, j]
        else:
            rest = column.astype(np.int64)
            for k in range(int(width.max(initial=1))):  # last digit first
                has = width > k
                buf[(pos + width - 1 - k)[has]] = 48 + rest[has] % 10
                rest //= 10
        pos += width
        buf[pos] = ord(",")
        pos += 1
    buf[pos - 1] = ord("\n")
    return buf.tobytes()


def _write_mlcsv(frame: pd.DataFrame, user_ids, item_ids, handle) -> None:
    """Header 'userId,movieId,rating,timestamp', rows by user then movie, as in ML-20M."""
    handle.write(b"userId,movieId,rating,timestamp\n")
    stars = np.array([f"{r / 2:.1f}".encode() for r in range(11)])  # b"0.0" .. b"5.0"
    for lo in range(0, len(frame), _ROWS_PER_WRITE):
        part = frame.iloc[lo : lo + _ROWS_PER_WRITE]
        handle.write(
            _text(
                [
                    user_ids[part["user"].to_numpy()],
                    item_ids[part["item"].to_numpy()],
                    stars[np.rint(part["rating"].to_numpy() * 2).astype(np.int64)],
                    part["timestamp"].to_numpy(),
                ]
            )
        )


def _write_netflix(frame: pd.DataFrame, user_ids, item_ids, handle) -> None:
    """A 'movie:' line, then that movie's 'customer,rating,date' lines, movies by id."""
    frame = frame.sort_values(["item", "user"], kind="stable")
    movies = frame["item"].to_numpy()
    starts = np.flatnonzero(np.r_[True, movies[1:] != movies[:-1]])
    bounds = np.r_[starts, len(movies)]
    # Chunks of whole movies, about _ROWS_PER_WRITE rows each, bound the text held in memory.
    edges = np.unique(
        np.r_[np.searchsorted(starts, np.arange(0, len(movies), _ROWS_PER_WRITE)), len(starts)]
    )
    for a, b in zip(edges[:-1], edges[1:]):
        part = frame.iloc[bounds[a] : bounds[b]]
        days = part["timestamp"].to_numpy() // 86_400
        text = _text(
            [
                user_ids[part["user"].to_numpy()],
                part["rating"].to_numpy().astype(np.int64),
                np.datetime_as_string(days.astype("datetime64[D]")).astype("S10"),
            ]
        )
        line_ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10) + 1
        offsets = np.r_[0, line_ends][bounds[a : b + 1] - bounds[a]]  # each movie's block
        pieces = []
        for k in range(b - a):  # one slice per movie, not per row
            pieces.append(b"%d:\n" % item_ids[movies[bounds[a + k]]])
            pieces.append(text[offsets[k] : offsets[k + 1]])
        handle.write(b"".join(pieces))
