"""Status indices: random, never reused, and a full list rolls over to a new one."""

from __future__ import annotations

import pytest

from exchange.status import service


def test_full_lists_roll_over_and_indices_never_repeat(node, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(service, "LIST_SIZE", 8)
    seen = []
    with node.sessions.begin() as s:
        for _ in range(40):
            seen.append(service.allocate(s, "certificates", node.clock, node.rng))
    assert len(set(seen)) == 40
    per_list: dict[int, int] = {}
    for list_id, idx in seen:
        assert 0 <= idx < 8
        per_list[list_id] = per_list.get(list_id, 0) + 1
    assert len(per_list) >= 5 and max(per_list.values()) <= 8


def test_statuses_of_many_in_chunks_with_missing_and_repeated_entries(node) -> None:  # type: ignore[no-untyped-def]
    """More entries than one statement takes, some asked twice, some that do not exist: each
    answer is that entry's own status, in the order asked."""
    from exchange.errors import NotFound

    with node.sessions.begin() as s:
        made = [service.allocate(s, "certificates", node.clock, node.rng) for _ in range(900)]
        for n, (list_id, idx) in enumerate(made):
            if n % 3:
                service.set_status(s, list_id, idx, n % 3)
    missing = [(made[0][0], -1), (10**6, 5)]
    asks = [*made, made[7], *missing, made[1]]
    with node.reads() as s:
        got = service.statuses_of(s, asks)
    want = [n % 3 for n in range(900)] + [7 % 3]
    assert got[:901] == want
    assert all(isinstance(g, NotFound) for g in got[901:903])
    assert got[903] == 1
    assert service.statuses_of(s, []) == []
