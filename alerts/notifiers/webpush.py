"""Web Push (RFC 8030/8291/8292) to patrol members' phones and browsers, with pywebpush and py-vapid.

`send(notification, target)`: `target` is the browser's PushSubscription JSON (`endpoint` + `keys.p256dh` +
`keys.auth`). The payload is a small JSON (see `push_payload`) encrypted with aes128gcm; TTL is configurable;
`Urgency` is "high" for critical notifications; `Topic` is derived from the incident so that a push service
holding an undelivered message about an incident replaces it with the newer one. 404/410 from the push service
mean the subscription is gone: `PermanentDeliveryError(gone=True)`, remove it.

`VapidKeys` holds the application server's key pair: generate one, load it from PEM or base64, and hand
`application_server_key` (URL-safe base64 of the raw public key) to the browser's `pushManager.subscribe()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher, WebPushException

from alerts.notifiers.base import Notification, Notifier, PermanentDeliveryError, RetryableDeliveryError
from alerts.notifiers.markdown import truncate_utf8
from alerts.notifiers.transport import describe_url, raise_for_http_status

GONE_STATUSES = frozenset({404, 410})
MAX_PAYLOAD_BYTES = 3000  # push services take 4096 bytes of encrypted record; leave room for the overhead
PAYLOAD_FIELDS = (
    "title", "body", "url", "severity", "kind", "incident_id", "alert_id", "label", "camera_name",
    "snapshot_url", "dedupe_key", "created_at",
)  # fmt: skip
_URGENCY = {"critical": "high", "high": "normal", "normal": "normal", "low": "low"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    text = "".join(text.split())
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class VapidKeys:
    """A P-256 VAPID key pair. Never shows the private key in its repr."""

    __slots__ = ("_private",)

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("VAPID keys are P-256 (prime256v1) keys")
        self._private = private_key

    @classmethod
    def generate(cls) -> VapidKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> VapidKeys:
        data = pem.encode() if isinstance(pem, str) else pem
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
        return cls(key)

    @classmethod
    def from_base64(cls, text: str) -> VapidKeys:
        """URL-safe (or standard) base64 of the raw 32-byte private value (what `web-push generate-vapid-keys`
        prints) or of a DER private key."""
        raw = _b64url_decode(text.replace("+", "-").replace("/", "_"))
        if len(raw) == 32:
            return cls(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))
        key = serialization.load_der_private_key(raw, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
        return cls(key)

    @classmethod
    def load(cls, text: str) -> VapidKeys:
        """PEM or base64, whichever `text` is."""
        return cls.from_pem(text) if "-----BEGIN" in text else cls.from_base64(text.strip())

    @classmethod
    def from_file(cls, path: str | Path) -> VapidKeys:
        return cls.load(Path(path).read_text())

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def private_base64(self) -> str:
        """The raw private value, URL-safe base64 (the compact form for an environment variable)."""
        return _b64url(self._private.private_numbers().private_value.to_bytes(32, "big"))

    def save(self, path: str | Path) -> None:
        """Write the private key as PEM, readable by the owner only."""
        target = Path(path)
        target.touch(mode=0o600, exist_ok=True)
        target.write_bytes(self.private_pem())

    @property
    def application_server_key(self) -> str:
        """URL-safe unpadded base64 of the uncompressed public point: `applicationServerKey` for browsers."""
        point = self._private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return _b64url(point)

    @property
    def vapid(self) -> Vapid02:
        return Vapid02(private_key=self._private)

    def __repr__(self) -> str:
        return f"VapidKeys(public={self.application_server_key[:12]}…)"


def push_payload(notification: Notification, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The JSON a service worker gets; the body is shortened if the whole would not fit in `max_bytes`."""
    fields = {name: getattr(notification, name) for name in PAYLOAD_FIELDS}
    data = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    if len(data) > max_bytes:
        room = len(notification.body.encode()) - (len(data) - max_bytes) - 8
        fields["body"] = truncate_utf8(notification.body, max(0, room))
        data = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    return data


def incident_topic(incident_id: str) -> str:
    """A `Topic` header value (at most 32 URL-safe base64 characters) for an incident."""
    return _b64url(hashlib.sha256(incident_id.encode()).digest()[:18])


def parse_subscription(target: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The subscription as pywebpush wants it, or PermanentDeliveryError when it is unusable."""
    if target is None:
        raise PermanentDeliveryError("web push needs a subscription as target")
    try:
        data = json.loads(target) if isinstance(target, str) else dict(target)
        endpoint, keys = data["endpoint"], data["keys"]
        subscription: dict[str, Any] = {
            "endpoint": str(endpoint),
            "keys": {"p256dh": str(keys["p256dh"]), "auth": str(keys["auth"])},
        }
    except (ValueError, KeyError, TypeError):
        raise PermanentDeliveryError(
            "web push subscription is not valid JSON with endpoint and keys"
        ) from None
    if urlsplit(str(endpoint)).scheme not in ("https", "http"):
        raise PermanentDeliveryError("web push endpoint is not an http(s) URL")
    return subscription


class WebPushNotifier(Notifier):
    channel = "webpush"

    def __init__(
        self,
        name: str,
        vapid: VapidKeys,
        subject: str,
        ttl_s: int = 3600,
        timeout_s: float = 10.0,
        collapse_by_incident: bool = True,
    ) -> None:
        """`subject`: a `mailto:` or `https:` contact for push services (the VAPID `sub` claim)."""
        super().__init__(name)
        self._vapid = vapid.vapid
        self._subject = subject
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._collapse = collapse_by_incident
        self._session = requests.Session()

    def send(self, notification: Notification, target: str | None = None) -> None:
        subscription = parse_subscription(target)
        endpoint = subscription["endpoint"]
        what = f"web push {self.name!r} ({describe_url(endpoint)})"
        parts = urlsplit(endpoint)
        # exp: push services refuse tokens valid for more than 24 h; 12 h as pywebpush does
        claims = {
            "sub": self._subject,
            "aud": f"{parts.scheme}://{parts.netloc}",
            "exp": int(time.time()) + 43200,
        }
        headers = {
            "Content-Type": "application/octet-stream",
            "Urgency": _URGENCY.get(notification.severity, "high"),
            **self._vapid.sign(claims),
        }
        if self._collapse:
            headers["Topic"] = incident_topic(notification.incident_id)
        try:
            pusher = WebPusher(subscription, requests_session=self._session)
        except (WebPushException, ValueError) as exc:  # bad keys in the subscription
            raise PermanentDeliveryError(f"{what}: unusable subscription ({type(exc).__name__})") from None
        try:
            response = pusher.send(
                push_payload(notification), headers, ttl=self._ttl_s, content_encoding="aes128gcm",
                timeout=self._timeout_s,
            )  # fmt: skip
        except requests.Timeout:
            raise RetryableDeliveryError(f"{what}: timed out") from None
        except requests.RequestException as exc:
            raise RetryableDeliveryError(f"{what}: {type(exc).__name__}") from None
        assert isinstance(response, requests.Response)
        raise_for_http_status(response.status_code, what, response.headers, gone_statuses=GONE_STATUSES)

    def close(self) -> None:
        self._session.close()
