"""Passwords: argon2id hashes (argon2-cffi), the policy a new password must meet.

Only the PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) is ever stored. A hash made with other
parameters than the hasher's still verifies; `needs_rehash` says when to replace it (at the next login).
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 1024  # hashing a megabyte on every try would be a cheap way to load the server


class WeakPassword(ValueError):
    """The password does not meet the policy; the message says why (and never contains the password)."""


def default_hasher() -> PasswordHasher:
    """argon2id with the RFC 9106 "low memory" parameters: 3 passes over 64 MiB, 4 lanes (about 0.1 s)."""
    return PasswordHasher(
        time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID
    )


def check_policy(password: str, username: str) -> None:
    """Raise WeakPassword unless the password is MIN_LENGTH..MAX_LENGTH characters and not the username."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")
    if password.strip().casefold() == username.strip().casefold():
        raise WeakPassword("the password must not be the username")
    if len(set(password)) == 1:
        raise WeakPassword("a password of one repeated character is too easy to guess")


def hash_password(password: str, hasher: PasswordHasher) -> str:
    return hasher.hash(password)


def verify_password(password_hash: str, password: str, hasher: PasswordHasher) -> bool:
    """Whether `password` matches; False for a mismatch and for a hash argon2 cannot read."""
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str, hasher: PasswordHasher) -> bool:
    """Whether the hash was made with other parameters (or another algorithm) than `hasher`'s."""
    try:
        return hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
