import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.sources import DATASETS, fetch_dataset
from ract.data.splits import load_split


def make_interactions(n_users=240, n_items=60, seed=0) -> pd.DataFrame:
    """Ratings with structure a model can learn: two taste groups over two halves of the
    items, plus noise. Ids are offset so that raw ids differ from matrix indices."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        liked = rng.choice(
            np.arange(n_items // 2) + group * (n_items // 2),
            size=rng.integers(6, 16),
            replace=False,
        )
        other = rng.choice(n_items, size=rng.integers(1, 5), replace=False)
        for i in liked:
            rows.append((1000 + u, 500 + i, float(rng.choice([4, 5]))))
        for i in other:
            rows.append((1000 + u, 500 + i, float(rng.choice([1, 2, 3, 4, 5]))))
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


@pytest.fixture
def interactions():
    return make_interactions()


@pytest.fixture(scope="session")
def split(tmp_path_factory):
    """A small prepared split (240 users, 60 items, 15% validation and test users) for the
    training tests."""
    out = tmp_path_factory.mktemp("split") / "s"
    prepare_split(make_interactions(), PrepareConfig(heldout_users=0.15), out)
    return load_split(out)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(items):
    """A test on the real ml-100k data (it needs the wheel, itself or through a fixture) runs
    the study or a good part of it: it is slow, and `make test` then stays offline."""
    for item in items:
        if "ml100k_wheel" in item.fixturenames:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ml100k_wheel(request, tmp_path_factory) -> Path:
    """ml-100k's offline copy, the RecBole wheel (ract.data.sources), fetched once for all the
    tests that run the study, and kept between runs in pytest's cache folder (.pytest_cache):
    each of them used to `pip download` the same wheel into its own download cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("ml-100k") if cache else tmp_path_factory.mktemp("ml-100k")
    wheel = folder / "wheels" / DATASETS["ml-100k"].offline[0].wheel
    if not wheel.is_file():  # else fetch_dataset would be content with the extracted ratings
        shutil.rmtree(folder / "ml-100k", ignore_errors=True)
    fetch_dataset("ml-100k", folder, offline=True)
    return wheel


@pytest.fixture(scope="session")
def download_cache(ml100k_wheel):
    """Gives a download cache folder (a workdir's data/raw, or `ract prepare --cache`) a link to
    the shared ml-100k wheel; the run still checks its SHA-256 and extracts it there."""

    def seed(folder: Path) -> Path:
        wheels = Path(folder) / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        (wheels / ml100k_wheel.name).symlink_to(ml100k_wheel)
        return folder

    return seed
