"""Who may see the dashboard: one access token, checked in constant time, given either on the
login page (which sets a signed session cookie) or as ``Authorization: Bearer`` (scripts).

- The session cookie is ``expiry.nonce.signature`` (HMAC-SHA256 under a key derived from the
  token): HttpOnly, SameSite=Strict, Secure when configured. Changing the token ends every
  session; the server keeps no session state, so every worker accepts every login.
- Forms carry a CSRF token derived from the session (or, on the login page, from a random
  cookie of the login form): a page on another site can neither read nor forge it.
- Wrong tokens are slowed down per client address: after a few failures each further
  attempt from that address waits longer (up to ``MAX_DELAY``), one attempt at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

SESSION_COOKIE = "aipersona_session"
LOGIN_COOKIE = "aipersona_login"
FREE_FAILURES = 3  # failures an address may make before it is slowed down
MAX_DELAY = 30.0  # seconds
FORGET_AFTER = 900.0  # an address's failures are forgotten after this long without one
MAX_ADDRESSES = 10_000


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (of any lengths)."""
    return hmac.compare_digest(_digest(a), _digest(b))


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class Throttle:
    """Slows down an address that keeps sending wrong tokens."""

    def __init__(self, *, free: int = FREE_FAILURES, max_delay: float = MAX_DELAY) -> None:
        self.free = free
        self.max_delay = max_delay
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def delay(self, address: str, now: float) -> float:
        """How long the next attempt from ``address`` waits."""
        seen = self._failures.get(address)
        if seen is None or now - seen.last > FORGET_AFTER or seen.count < self.free:
            return 0.0
        return float(min(self.max_delay, 2 ** (seen.count - self.free)))

    def failed(self, address: str, now: float) -> None:
        seen = self._failures.pop(address, None) or _Failures()
        if now - seen.last > FORGET_AFTER:
            seen.count = 0
        seen.count += 1
        seen.last = now
        self._failures[address] = seen
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def lock(self, address: str) -> asyncio.Lock:
        """One attempt at a time per address, so parallel guesses queue behind the delay."""
        if len(self._locks) > MAX_ADDRESSES:
            self._locks = {a: lk for a, lk in self._locks.items() if lk.locked()}
        return self._locks.setdefault(address, asyncio.Lock())


class Auth:
    """The token, the signed cookies and the CSRF tokens of one dashboard."""

    def __init__(self, token: str, *, session_seconds: float, throttle: Throttle | None = None):
        self._token = token
        self._key = hmac.new(_digest(token), b"aipersona-dashboard/v1", hashlib.sha256).digest()
        self.session_seconds = session_seconds
        self.throttle = throttle or Throttle()

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    async def attempt(self, address: str, candidate: str) -> bool:
        """Check a token someone sent, slowing down an address that keeps failing."""
        throttle = self.throttle
        async with throttle.lock(address):
            wait = throttle.delay(address, time.monotonic())
            if wait:
                await asyncio.sleep(wait)
            if same(candidate, self._token):
                throttle.succeeded(address)
                return True
            throttle.failed(address, time.monotonic())
            return False

    # -- the session cookie ---------------------------------------------------------------

    def new_session(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.session_seconds)
        body = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._sign('session/' + body)}"

    def session_valid(self, cookie: str, now: float | None = None) -> bool:
        body, _, signature = cookie.rpartition(".")
        expires, _, nonce = body.partition(".")
        if not (expires.isdigit() and nonce and signature):
            return False
        if not same(signature, self._sign("session/" + body)):
            return False
        return int(expires) > (time.time() if now is None else now)

    # -- CSRF -------------------------------------------------------------------------------

    def csrf_for(self, cookie: str) -> str:
        """The CSRF token of the forms of one session (or of one login form's cookie)."""
        return self._sign("csrf/" + cookie)

    def csrf_valid(self, cookie: str, sent: str) -> bool:
        return bool(cookie) and same(sent, self.csrf_for(cookie))
