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
