"""Id membership without a stack, and the Postgres query that answers for the rest."""

from __future__ import annotations

import numpy as np
import pytest

from feedstore.ids import USERS, IdIndex, existing


@pytest.mark.pure
def test_id_index_membership_and_add():
    index = IdIndex(np.array([5, 1, 9, 5]))
    assert len(index) == 3
    assert index.contains(np.array([1, 2, 9, 10, -1])).tolist() == [True, False, True, False, False]
    index.add(np.array([2, 2**63 - 1]))
    assert index.contains(np.array([2, 2**63 - 1, 3])).tolist() == [True, True, False]
    assert IdIndex().contains(np.array([1])).tolist() == [False]


def test_existing_answers_from_postgres(pg):
    with pg.transaction(force_rollback=True):
        pg.execute("INSERT INTO users (user_id, created_at) VALUES (990001, now()), (990002, now()) "
                    "ON CONFLICT DO NOTHING")
        assert sorted(existing(pg, USERS, np.array([990001, 990003, 990002])).tolist()) == [990001, 990002]
        assert existing(pg, USERS, np.array([], dtype=np.int64)).tolist() == []
