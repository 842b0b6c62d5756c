"""ObjectStore against a real SeaweedFS S3 server (the session `s3_server` fixture in tests/conftest.py)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gridwatch.services import S3Server, free_port
from storage.objectstore import ObjectStore, StorageError, clip_key, snapshot_key, thumbnail_key


def _store(server: S3Server, keys: tuple[str, str], bucket: str, **kwargs: object) -> ObjectStore:
    access, secret = keys
    return ObjectStore(server.endpoint, access, secret, bucket, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store(s3_server: S3Server, s3_keys: tuple[str, str]) -> ObjectStore:
    s = _store(s3_server, s3_keys, f"gw-{uuid.uuid4().hex[:12]}")
    s.ensure_bucket()
    return s


def test_ensure_bucket_is_idempotent_and_race_safe(s3_server: S3Server, s3_keys: tuple[str, str]) -> None:
    bucket = f"gw-{uuid.uuid4().hex[:12]}"
    stores = [_store(s3_server, s3_keys, bucket) for _ in range(4)]
    errors: list[BaseException] = []

    def ensure(s: ObjectStore) -> None:
        try:
            s.ensure_bucket()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ensure, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stores[0].ensure_bucket()
    stores[0].put_bytes("k", b"x", "text/plain")
    stores[1].ensure_bucket()  # an existing, non-empty bucket is left alone
    assert stores[1].get_bytes("k") == b"x"


def test_put_get_exists_round_trip(store: ObjectStore) -> None:
    key = clip_key("cam-01", datetime(2024, 3, 5, 12, tzinfo=UTC), uuid.uuid4().hex)
    data = bytes(range(256)) * 1000
    assert not store.exists(key)
    store.put_bytes(key, data, "video/mp4", tags={"camera": "cam-01", "label": "person"})
    assert store.exists(key)
    assert store.get_bytes(key) == data
    assert store.content_type(key) == "video/mp4"
    assert store.get_tags(key) == {"camera": "cam-01", "label": "person"}
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting a missing object is fine


def test_put_file(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "snap.jpg"
    path.write_bytes(b"\xff\xd8fake jpeg\xff\xd9")
    key = snapshot_key("cam-02", datetime(2024, 3, 5, tzinfo=UTC), "a1")
    store.put_file(key, path, "image/jpeg", tags={"kind": "snapshot"})
    assert store.get_bytes(key) == path.read_bytes()
    assert store.content_type(key) == "image/jpeg"
    assert store.get_tags(key) == {"kind": "snapshot"}
    with pytest.raises(FileNotFoundError):
        store.put_file("x.jpg", tmp_path / "missing.jpg", "image/jpeg")


def test_get_missing_key_is_a_storage_error(store: ObjectStore) -> None:
    with pytest.raises(StorageError) as info:
        store.get_bytes("clips/none.mp4")
    assert info.value.key == "clips/none.mp4"
    assert "clips/none.mp4" in str(info.value)
    assert info.value.retryable is False


def test_presigned_get_works_then_expires(store: ObjectStore) -> None:
    store.put_bytes("p/clip.mp4", b"clip bytes", "video/mp4")
    lasting = store.presigned_get("p/clip.mp4", timedelta(minutes=5))
    short = store.presigned_get("p/clip.mp4", timedelta(seconds=2))
    with urllib.request.urlopen(short, timeout=5) as response:
        assert response.read() == b"clip bytes"
        assert response.headers["Content-Type"] == "video/mp4"
    time.sleep(3.5)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(short, timeout=5)
    assert info.value.code == 403
    with urllib.request.urlopen(lasting, timeout=5) as response:
        assert response.read() == b"clip bytes"


def test_wrong_secret_is_a_storage_error_without_the_secret(
    s3_server: S3Server, s3_keys: tuple[str, str], store: ObjectStore
) -> None:
    wrong_secret = "wrong-secret-Pq7"
    bad = ObjectStore(s3_server.endpoint, s3_keys[0], wrong_secret, store.bucket)
    attempts = [
        ("k.bin", lambda: bad.put_bytes("k.bin", b"1", "application/octet-stream")),
        ("k.bin", lambda: bad.get_bytes("k.bin")),
        (None, bad.ensure_bucket),
    ]
    for key, attempt in attempts:
        with pytest.raises(StorageError) as info:
            attempt()
        text = str(info.value)
        assert wrong_secret not in text
        assert s3_keys[1] not in text
        assert s3_server.endpoint in text
        assert info.value.key == key
        assert key is None or key in text
        assert info.value.retryable is False
    assert wrong_secret not in repr(bad)
    assert s3_keys[1] not in repr(store)


def test_unreachable_store_fails_fast_and_retryable(s3_keys: tuple[str, str]) -> None:
    dead = ObjectStore(f"127.0.0.1:{free_port()}", *s3_keys, bucket="gw-dead", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        dead.put_bytes("clips/a.mp4", b"1", "video/mp4")
    assert time.monotonic() - started < 10
    assert info.value.retryable is True
    assert info.value.key == "clips/a.mp4"
    assert s3_keys[1] not in str(info.value)


def test_key_layout() -> None:
    beijing = timezone(timedelta(hours=8))
    when = datetime(2024, 3, 6, 1, 30, tzinfo=beijing)  # 2024-03-05 17:30 UTC
    assert clip_key("cam-01", when, "abc123") == "clips/cam-01/2024/03/05/abc123.mp4"
    assert snapshot_key("cam-01", when, "abc123") == "snapshots/cam-01/2024/03/05/abc123.jpg"
    assert thumbnail_key("cam-01", when, "abc123") == "thumbnails/cam-01/2024/03/05/abc123.jpg"
    assert ObjectStore.thumbnail_key("cam-01", when, "abc123") == thumbnail_key("cam-01", when, "abc123")
    # continuation clips of a long event; the first clip keeps the plain key
    assert clip_key("cam-01", when, "abc123", 0) == clip_key("cam-01", when, "abc123")
    assert clip_key("cam-01", when, "abc123", 2) == "clips/cam-01/2024/03/05/abc123-2.mp4"
    with pytest.raises(ValueError):
        clip_key("cam-01", when, "abc123", -1)
    assert ObjectStore.clip_key("v1_g2.cam", datetime(2025, 12, 31, 23, 59, tzinfo=UTC), "f" * 32) == (
        f"clips/v1_g2.cam/2025/12/31/{'f' * 32}.mp4"
    )
    with pytest.raises(ValueError):
        clip_key("cam-01", datetime(2024, 3, 5), "abc")  # naive
    for bad in ("../etc", "a/b", "", "cam 1"):
        with pytest.raises(ValueError):
            clip_key(bad, when, "abc")
        with pytest.raises(ValueError):
            snapshot_key("cam", when, bad)
        with pytest.raises(ValueError):
            thumbnail_key(bad, when, "abc")
