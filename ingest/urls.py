"""Camera URL rules: which URLs may be opened, and how they are shown without their secrets."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, unquote, urlsplit

ALLOWED_SCHEMES = ("rtsp", "rtsps")
# What FFmpeg may open underneath an RTSP URL; anything else (file, http, concat, data...) is refused at open.
PROTOCOL_WHITELIST = "rtsp,rtsps,rtp,tcp,udp,tls"

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")


class CameraURLError(ValueError):
    """A camera URL that GridWatch refuses to open. The message never contains the password."""


# query parameters that carry a secret (cameras that take `?user=..&password=..`, Sentinel's password)
_SECRET_QUERY = re.compile(r"(?i)(^|&)([a-z_]*(?:password|passwd|pwd|secret|token))=[^&]*")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, in the user info and in query parameters that hold one
    (`password=`, `sentinel_password=`, `token=`...); the user name is kept to help an admin. Works for
    netlocs `urlsplit` cannot take apart (a list of hosts) and never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


def redact_text(text: str, *secrets: str) -> str:
    """Remove credentials from free text (error messages of FFmpeg/PyAV carry the full URL).

    Every `user:pass@` in a URL is masked, and each given secret is removed raw and %-encoded.
    """
    text = _USERINFO.sub(lambda m: m.group("scheme") + _mask_userinfo(m.group("userinfo")) + "@", text)
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret), unquote(secret)}:
            if form:
                text = text.replace(form, "***")
    return text


def _mask_userinfo(userinfo: str) -> str:
    user, sep, _ = userinfo.partition(":")
    return f"{user}:***" if sep else userinfo


def url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def validate_camera_url(url: str) -> str:
    """Return the URL if GridWatch may open it as a camera, else raise CameraURLError (redacted)."""
    shown = redact_text(url, url_password(url) or "")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise CameraURLError(f"malformed camera URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise CameraURLError(
            f"camera URL {shown!r} has scheme {scheme or '(none)'!r}; only rtsp:// and rtsps:// are allowed"
        )
    host = parts.hostname
    if not host:
        raise CameraURLError(f"camera URL {shown!r} has no host")
    if port == 0:
        raise CameraURLError(f"camera URL {shown!r} has port 0")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and (address.is_link_local or address.is_multicast or address.is_unspecified):
        raise CameraURLError(
            f"camera URL {shown!r} points at a link-local, multicast or unspecified address, which is refused"
        )
    if host.lower() in {"metadata.google.internal", "metadata"}:
        raise CameraURLError(f"camera URL {shown!r} points at a cloud metadata service, which is refused")
    return url.strip()
