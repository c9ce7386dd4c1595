"""The worker's gRPC message limit comes from the host (SNAKEPIT_MAX_MESSAGE_BYTES)."""

import pytest

from snakepit_bridge import context


@pytest.mark.parametrize(
    "raw, want",
    [("3145728", 3 << 20), ("", 16 << 20), ("junk", 16 << 20), ("-5", 16 << 20), ("0", 16 << 20)],
)
def test_limit_from_environment(monkeypatch: pytest.MonkeyPatch, raw: str, want: int) -> None:
    monkeypatch.setenv("SNAKEPIT_MAX_MESSAGE_BYTES", raw)
    assert context._max_message_bytes() == want
