import numpy as np
import pandas as pd
import pytest


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
