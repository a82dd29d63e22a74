import numpy as np
import pandas as pd
import pytest

from ract.data.prepare import PrepareConfig, prepare_split
from ract.data.splits import load_split


def make_interactions(n_users=240, n_items=60, seed=0) -> pd.DataFrame:
    """Ratings with structure a model can learn: two taste groups over two halves of the
    items, plus noise. Ids are offset so that raw ids differ from matrix indices."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 2
        liked = rng.choice(np.arange(n_items // 2) + group * (n_items // 2),
                           size=rng.integers(6, 16), replace=False)
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
