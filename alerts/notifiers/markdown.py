"""The notification as a short markdown message for group-chat robots (WeCom, DingTalk)."""

from __future__ import annotations

from collections.abc import Callable

from alerts.notifiers.base import Notification

KIND_WORDS = {"new": "New alert", "update": "Update", "escalation": "ESCALATION", "resolved": "Resolved"}


def one_line(text: str) -> str:
    return " ".join(text.split())


def truncate_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (never inside a character), with … where it was cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes - 3)].decode(errors="ignore") + "…"


def render(
    notification: Notification,
    heading: Callable[[Notification, str], str] = lambda _n, text: text,
    images: bool = False,
    max_bytes: int = 4000,
) -> str:
    """Markdown: a heading (styled by `heading`), the body, where and what, and links. The body is shortened
    first when the message would exceed `max_bytes`."""
    n = notification
    title = one_line(f"[{n.severity.upper()}] {KIND_WORDS.get(n.kind, n.kind)}: {n.title}")
    facts = [
        f"> Camera: {one_line(n.camera_name)} ({n.camera_id})",
        f"> Village / grid: {one_line(n.village)} / {one_line(n.grid)}",
        f"> Detected: {n.label} {n.score:.0%} at {n.created_at}",
    ]
    if n.team:
        facts.append(f"> Team: {one_line(n.team)}")
    links = []
    if n.url:
        links.append(f"[Open alert]({n.url})")
    if n.snapshot_url:
        links.append(f"![snapshot]({n.snapshot_url})" if images else f"[Snapshot]({n.snapshot_url})")
    head = f"### {heading(n, title)}\n"
    tail = "\n" + "\n".join(facts) + ("\n\n" + "\n\n".join(links) if links else "")
    room = max_bytes - len(head.encode()) - len(tail.encode()) - 1
    body = truncate_utf8(n.body.strip(), room) if room > 0 else ""
    return truncate_utf8(head + body + "\n" + tail, max_bytes)
