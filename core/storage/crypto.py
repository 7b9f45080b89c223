"""Encryption at rest: AES-256-GCM under a data key per person, wrapped by a master key.

- The master key (32 bytes, base64 in the environment variable named by
  ``[privacy] encryption_key_env``) never touches the database; it only wraps data keys.
- Each person has a random 32-byte data key, stored wrapped in ``persona_keys`` and deleted
  with the person: ``/forget all`` leaves their remaining ciphertext (in WAL frames, copies,
  later backups) unreadable. Backups made before the forget still hold the wrapped key:
  ``aipersona keys rotate`` under a new master key, and destroying the old master key, make
  those unreadable too.
- A sealed text is ``enc1:`` + base64(12-byte nonce + ciphertext + 16-byte tag), with the
  person's id as associated data, so a row moved to another person does not open.
- Texts without the prefix are plaintext (written before encryption was turned on) and read
  as they are; ``aipersona keys encrypt`` seals them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from ..errors import ConfigError, StorageError

PREFIX = "enc1:"
NO_KEY = "encryption is off: set [privacy] encryption_key_env and put the key in that variable"


def _aesgcm(key: bytes) -> object:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def load_master_key(env: str) -> bytes:
    """The master key from the environment variable ``env`` (32 bytes, base64)."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        raise ConfigError(
            f"encryption is on ([privacy] encryption_key_env) but the environment variable "
            f"{env} is empty: set it to 32 random bytes in base64"
        )
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the environment variable {env} is not base64") from None
    if len(key) != 32:
        raise ConfigError(f"the environment variable {env} holds {len(key)} bytes, not 32")
    return key


class Sealer:
    """Seals and opens one person's texts (a no-op without a key: plaintext stores)."""

    __slots__ = ("_aad", "_aead")

    def __init__(self, key: bytes | None, persona_id: int) -> None:
        self._aead = _aesgcm(key) if key is not None else None
        self._aad = f"aipersona/persona/{persona_id}".encode()

    def seal(self, text: str) -> str:
        if self._aead is None:
            return text
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, text.encode(), self._aad)  # type: ignore[attr-defined]
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def seal_opt(self, text: str | None) -> str | None:
        return None if text is None else self.seal(text)

    def open(self, text: str) -> str:
        if not text.startswith(PREFIX):
            return text  # plaintext from before encryption was on
        if self._aead is None:
            raise StorageError(
                "this database holds encrypted data: set [privacy] encryption_key_env and the key"
            )
        blob = base64.b64decode(text[len(PREFIX) :])
        try:
            plain: bytes = self._aead.decrypt(blob[:12], blob[12:], self._aad)  # type: ignore[attr-defined]
        except Exception:
            raise StorageError("a sealed text does not open with its person's key") from None
        return plain.decode()

    def open_opt(self, text: str | None) -> str | None:
        return None if text is None else self.open(text)


PLAIN = Sealer(None, 0)


class Keyring:
    """The master key: wraps and unwraps data keys, with a bounded cache of unwrapped ones.

    The cache is keyed by the wrapped key as stored, not by the person's id: an id can be
    used again after a deletion (by any process), a wrapped key never.
    """

    CACHE_MAX = 100_000

    def __init__(self, master: bytes) -> None:
        self._master = _aesgcm(master)
        self.master_id = hashlib.sha256(b"aipersona master key id/" + master).hexdigest()[:16]
        self._cache: dict[str, bytes] = {}

    def new_data_key(self, persona_id: int) -> tuple[bytes, str]:
        """A fresh data key and its wrapped form (for ``persona_keys``)."""
        key = os.urandom(32)
        wrapped = self.wrap(key, persona_id)
        self._remember(wrapped, key)
        return key, wrapped

    def wrap(self, key: bytes, persona_id: int) -> str:
        nonce = os.urandom(12)
        aad = f"aipersona/data-key/{persona_id}".encode()
        sealed = self._master.encrypt(nonce, key, aad)  # type: ignore[attr-defined]
        return base64.b64encode(nonce + sealed).decode()

    def unwrap(self, wrapped: str, persona_id: int) -> bytes:
        cached = self._cache.get(wrapped)
        if cached is not None:
            return cached
        blob = base64.b64decode(wrapped)
        aad = f"aipersona/data-key/{persona_id}".encode()
        try:
            key: bytes = self._master.decrypt(blob[:12], blob[12:], aad)  # type: ignore[attr-defined]
        except Exception:
            raise StorageError(
                "the encryption key does not open this database's data keys (a wrong key?)"
            ) from None
        self._remember(wrapped, key)
        return key

    def _remember(self, wrapped: str, key: bytes) -> None:
        if len(self._cache) >= self.CACHE_MAX:
            self._cache.clear()
        self._cache[wrapped] = key

    def sealer(self, key: bytes, persona_id: int) -> Sealer:
        return Sealer(key, persona_id)


def required(keyring: Keyring | None) -> Keyring:
    """The store's keyring, for operations that need encryption on (StorageError if off)."""
    if keyring is None:
        raise StorageError(NO_KEY)
    return keyring


def check_master(where: str, stored_master_id: str | None, keyring: Keyring | None) -> None:
    """A store whose data keys were wrapped by ``stored_master_id`` (None: no data key yet)
    opens only with that master key."""
    if stored_master_id is None:
        return
    if keyring is None:
        raise StorageError(
            f"{where} is encrypted: set [privacy] encryption_key_env and put its key in that "
            "environment variable"
        )
    if keyring.master_id != stored_master_id:
        raise StorageError(
            f"the encryption key does not open {where} (it was encrypted with another key; "
            "after 'aipersona keys rotate' use the new one)"
        )
