"""The package exports exactly the documented names, and settings are validated."""

import pytest

import fastapi_streamhub
from fastapi_streamhub import StreamHub

DOCUMENTED = {
    "Backend",
    "BackendUnavailable",
    "Batch",
    "Chunk",
    "Cursor",
    "End",
    "Event",
    "Grant",
    "InvalidChunk",
    "InvalidCursor",
    "InvalidSessionId",
    "LeaseExpired",
    "LimitExceeded",
    "MemoryBackend",
    "MessageReceipt",
    "Metadata",
    "OwnershipLost",
    "Producer",
    "Registration",
    "Reset",
    "ResumableStreamingResponse",
    "Session",
    "SessionDeleted",
    "SessionFinished",
    "SessionInfo",
    "SessionNotFound",
    "SessionStreamResponse",
    "StaleGeneration",
    "State",
    "SteeringMessage",
    "StreamClosed",
    "StreamContext",
    "StreamHub",
    "StreamHubError",
    "SubProducer",
    "Subscription",
    "__version__",
    "create_router",
    "get_hub",
    "streamhub_router",
}


def test_all_is_sorted_and_exactly_documented() -> None:
    assert fastapi_streamhub.__all__ == sorted(fastapi_streamhub.__all__)
    assert set(fastapi_streamhub.__all__) == DOCUMENTED
    for name in fastapi_streamhub.__all__:
        assert hasattr(fastapi_streamhub, name), name


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(fastapi_streamhub, n)
        for n in fastapi_streamhub.__all__
        if isinstance(getattr(fastapi_streamhub, n), type)
        and issubclass(getattr(fastapi_streamhub, n), Exception)
    ]
    assert len(errors) == 13
    assert all(issubclass(e, fastapi_streamhub.StreamHubError) for e in errors)
    assert issubclass(fastapi_streamhub.SessionNotFound, LookupError)
    assert issubclass(fastapi_streamhub.BackendUnavailable, ConnectionError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_ttl": 0}, "lease_ttl"),
        ({"lease_ttl": -1}, "lease_ttl"),
        ({"lease_ttl": float("nan")}, "lease_ttl"),
        ({"lease_ttl": "10"}, "lease_ttl"),
        ({"retention": 1, "lease_ttl": 10}, "retention"),
        ({"renew_interval": 20}, "renew_interval"),
        ({"key_prefix": "a b"}, "key_prefix"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"maxlen": 0}, "maxlen"),
        ({"max_chunk_bytes": True}, "max_chunk_bytes"),
    ],
)
def test_settings_are_validated_at_construction(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamHub(**options)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        StreamHub(lease_tll=3)


@pytest.mark.parametrize("url", ["http://x", "redis", "postgres://a/b", ""])
def test_from_url_refuses_unknown_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        StreamHub.from_url(url)


def test_from_url_schemes() -> None:
    assert type(StreamHub.from_url("memory://").backend).__name__ == "MemoryBackend"
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/x.sock"):
        assert type(StreamHub.from_url(url).backend).__name__ == "RedisBackend"


def test_constructor_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        StreamHub(object())
