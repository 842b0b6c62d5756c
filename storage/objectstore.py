"""Clips and snapshots in any S3-compatible store (SeaweedFS, MinIO, cloud) through the `minio` SDK."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

__all__ = ["ObjectStore", "StorageError", "clip_key", "snapshot_key", "thumbnail_key"]

_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_BUCKET_OWNED_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
# Only what a camera id or alert id can be without breaking the key layout: no slashes, no "..".
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StorageError(Exception):
    """An object-store operation failed. Names the key and endpoint, never the secret key.

    `retryable` is True for network failures, timeouts and 5xx answers (worth spooling and retrying),
    False for answers that will not change on retry (bad credentials, missing bucket, ...).
    """

    def __init__(
        self, message: str, *, key: str | None, endpoint: str, retryable: bool, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.key = key
        self.endpoint = endpoint
        self.retryable = retryable
        self.code = code  # the S3 error code ("NoSuchBucket", "AccessDenied", ...) when the store answered


def _key_part(value: str, what: str) -> str:
    if not _KEY_PART.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} cannot be used in an object key")
    return value


def _dated_key(kind: str, camera: str, when: datetime, alert_id: str, suffix: str, sequence: int = 0) -> str:
    if when.tzinfo is None:
        raise ValueError("object keys need a timezone-aware datetime (naive datetimes are ambiguous)")
    if sequence < 0:
        raise ValueError(f"a clip sequence is >= 0, got {sequence}")
    day = when.astimezone(UTC)
    camera = _key_part(camera, "camera id")
    alert_id = _key_part(alert_id, "alert id")
    name = f"{alert_id}-{sequence}" if sequence else alert_id
    return f"{kind}/{camera}/{day:%Y}/{day:%m}/{day:%d}/{name}.{suffix}"


def clip_key(camera: str, when: datetime, alert_id: str, sequence: int = 0) -> str:
    """`clips/{camera}/{yyyy}/{mm}/{dd}/{alert_id}.mp4`, the date taken in UTC; a continuation clip of a long
    event (`sequence` 1, 2...) is `.../{alert_id}-{sequence}.mp4`."""
    return _dated_key("clips", camera, when, alert_id, "mp4", sequence)


def snapshot_key(camera: str, when: datetime, alert_id: str) -> str:
    """`snapshots/{camera}/{yyyy}/{mm}/{dd}/{alert_id}.jpg`, the date taken in UTC."""
    return _dated_key("snapshots", camera, when, alert_id, "jpg")


def thumbnail_key(camera: str, when: datetime, alert_id: str) -> str:
    """`thumbnails/{camera}/{yyyy}/{mm}/{dd}/{alert_id}.jpg` (the small snapshot for the feed), UTC date."""
    return _dated_key("thumbnails", camera, when, alert_id, "jpg")


class ObjectStore:
    """One bucket of an S3-compatible store.

    Requests time out after `timeout` seconds and are retried at most twice, so an unreachable store
    fails fast (the caller spools) instead of hanging a worker thread.
    """

    clip_key = staticmethod(clip_key)
    snapshot_key = staticmethod(snapshot_key)
    thumbnail_key = staticmethod(thumbnail_key)

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.secure = secure
        self._secret_key = secret_key
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504), allowed_methods=None
            ),
            maxsize=16,
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self.access_key = access_key

    def __repr__(self) -> str:
        return (
            f"ObjectStore(endpoint={self.endpoint!r}, bucket={self.bucket!r}, access_key={self.access_key!r})"
        )

    # -- operations -----------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (safe to call from several processes at once)."""
        try:
            if self._client.bucket_exists(self.bucket):
                return
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code in _BUCKET_OWNED_CODES:
                return
            self._fail("create bucket", None, exc)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("create bucket", None, exc)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str,
        tags: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        try:
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                tags=_tags(tags),
                metadata=_metadata(metadata),
            )
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("put", key, exc)

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str,
        tags: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
        part_size: int = 0,
    ) -> None:
        """Upload a file; above `part_size` (0: the SDK's choice, at least 5 MiB) as a multipart upload,
        which S3 makes visible only once complete (an interrupted one leaves no object)."""
        try:
            self._client.fput_object(
                self.bucket,
                key,
                str(path),
                content_type=content_type,
                tags=_tags(tags),
                metadata=_metadata(metadata),
                part_size=part_size,
            )
        except (MinioException, HTTPError, ValueError) as exc:
            self._fail("put", key, exc)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
                raise  # a local problem with the file, not with the store
            self._fail("put", key, exc)

    def get_bytes(self, key: str) -> bytes:
        response: urllib3.BaseHTTPResponse | None = None
        try:
            response = self._client.get_object(self.bucket, key)
            return response.read()
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("get", key, exc)
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def sha256_of(self, key: str) -> str:
        """Read the object back and hash it (streamed, so a large clip is never held in memory)."""
        response: urllib3.BaseHTTPResponse | None = None
        digest = hashlib.sha256()
        try:
            response = self._client.get_object(self.bucket, key)
            for chunk in response.stream(1024 * 1024):
                digest.update(chunk)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("read back", key, exc)
        finally:
            if response is not None:
                response.close()
                response.release_conn()
        return digest.hexdigest()

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata (`x-amz-meta-*`), names lower-case without the prefix."""
        try:
            stat = self._client.stat_object(self.bucket, key)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("stat", key, exc)
        prefix = "x-amz-meta-"
        return {
            name.lower()[len(prefix) :]: value
            for name, value in (stat.metadata or {}).items()
            if name.lower().startswith(prefix)
        }

    def incomplete_uploads(self, prefix: str) -> list[tuple[str, str, datetime | None]]:
        """(key, upload id, initiated) of the multipart uploads under `prefix` not completed nor aborted.

        The minio SDK (7.2) has no public call for this: it uses its `_list_multipart_uploads`.
        """
        found: list[tuple[str, str, datetime | None]] = []
        marker: str | None = None
        try:
            while True:
                result = self._client._list_multipart_uploads(
                    self.bucket, prefix=prefix, key_marker=marker, max_uploads=1000
                )
                found += [(u.object_name, u.upload_id or "", u.initiated_time) for u in result.uploads]
                if not result.is_truncated or not result.next_key_marker:
                    return found
                marker = result.next_key_marker
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("list multipart uploads under", prefix, exc)

    def abort_incomplete_uploads(
        self, prefixes: Iterable[str], *, keys: set[str], initiated_before: datetime
    ) -> int:
        """Abort unfinished multipart uploads under `prefixes` of `keys`, or begun before `initiated_before`
        (others may be another worker's uploads in progress). Returns how many were aborted."""
        aborted = 0
        for prefix in prefixes:
            for key, upload_id, initiated in self.incomplete_uploads(prefix):
                if key not in keys and (initiated is None or initiated >= initiated_before):
                    continue
                try:
                    self._client._abort_multipart_upload(self.bucket, key, upload_id)
                except S3Error as exc:
                    if exc.code != "NoSuchUpload":
                        self._fail("abort the multipart upload of", key, exc)
                except (MinioException, HTTPError, OSError, ValueError) as exc:
                    self._fail("abort the multipart upload of", key, exc)
                aborted += 1
        return aborted

    def exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return False
            self._fail("stat", key, exc)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("stat", key, exc)
        return True

    def content_type(self, key: str) -> str | None:
        try:
            return self._client.stat_object(self.bucket, key).content_type
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("stat", key, exc)

    def get_tags(self, key: str) -> dict[str, str]:
        try:
            tags = self._client.get_object_tags(self.bucket, key)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("get tags of", key, exc)
        return dict(tags) if tags else {}

    def presigned_get(self, key: str, expires: timedelta) -> str:
        """A URL anyone can GET until `expires` has passed (then the store answers 403)."""
        try:
            return self._client.presigned_get_object(self.bucket, key, expires=expires)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("presign", key, exc)

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing object is not an error."""
        try:
            self._client.remove_object(self.bucket, key)
        except (MinioException, HTTPError, OSError, ValueError) as exc:
            self._fail("delete", key, exc)

    def close(self) -> None:
        self._http.clear()

    # -- errors ---------------------------------------------------------------------------------
    def _fail(self, op: str, key: str | None, exc: BaseException) -> NoReturn:
        what = f"{key!r} in bucket {self.bucket!r}" if key is not None else f"bucket {self.bucket!r}"
        detail = f"{type(exc).__name__}: {exc}"
        if self._secret_key:
            detail = detail.replace(self._secret_key, "***")
        raise StorageError(
            f"cannot {op} {what} at {self.endpoint}: {detail}",
            key=key,
            endpoint=self.endpoint,
            retryable=_retryable(exc),
            code=exc.code if isinstance(exc, S3Error) else None,
        ) from exc


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.response.status >= 500
    # ServerError (5xx), InvalidResponseError, urllib3 network errors and OSError are worth retrying.
    return not isinstance(exc, ValueError)


def _metadata(metadata: dict[str, str] | None) -> dict[str, str | list[str] | tuple[str]] | None:
    return {f"x-amz-meta-{k}": v for k, v in metadata.items()} if metadata else None


def _tags(tags: dict[str, str] | None) -> Tags | None:
    if not tags:
        return None
    result = Tags(for_object=True)
    result.update(tags)
    return result
