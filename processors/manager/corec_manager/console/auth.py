"""Who may read and who may change things through the console.

One secret, the console's token, guards everything:

* An operator signs in by opening a URL with ``?token=...`` once (``corec-kit manager console``
  prints it); the console answers with a session cookie (``HttpOnly``, ``SameSite=Strict``)
  holding an HMAC of the token, never the token itself, and redirects to the same page without
  it, so the token stays out of the address bar, the history and screenshots. A script can send
  ``Authorization: Bearer TOKEN`` instead.
* Reading pages needs a session, except on a loopback address with no token given: there the
  pages are open to the local user, as a Flower or rq-dashboard on localhost is.
* Changing state (send, replay, delete) always needs a session or the bearer token. With the
  cookie, the request must also carry the page's CSRF value (``X-CSRF-Token``, an HMAC the
  page receives in a ``<meta>`` tag) and, when the browser sends one, an ``Origin`` equal to the
  console's own: a page on another site can make the browser send the cookie, never read the
  value.

A console bound to any other address than loopback refuses to start without a token
(:func:`check_bind`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field

#: The session cookie's name, before ``_<port>`` (browsers keep cookies per host, not port).
COOKIE = "corec_console"
#: The header a state-changing request carries the page's CSRF value in.
CSRF_HEADER = "x-csrf-token"
#: The environment variable the token may come from (``--token`` wins).
TOKEN_ENV = "COREC_CONSOLE_TOKEN"  # noqa: S105 - a variable name, not a secret


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None) -> str | None:
    """Why the console may not serve on ``host`` with this token (``None``: it may)."""
    if token is not None and len(token) < 16:
        return (
            "the console token is too short: use at least 16 characters "
            "(e.g. `openssl rand -hex 16`)"
        )
    if token is None and not is_loopback(host):
        return (
            f"refusing to serve the console on {host} without a token: anyone who reaches the "
            f"port could replay and delete dead letters. Pass --token TOKEN or set {TOKEN_ENV}, "
            "or bind 127.0.0.1 (the default) and use an SSH tunnel"
        )
    return None


@dataclass
class Auth:
    """The console's token and what it guards (see the module docstring)."""

    token: str = field(repr=False)
    #: Pages may be read without a session (loopback, no token given).
    open_reads: bool = False

    @classmethod
    def for_bind(cls, host: str, token: str | None) -> Auth:
        """The token given, or a fresh random one for a loopback console (printed at start)."""
        if token is None:
            return cls(secrets.token_urlsafe(24), open_reads=is_loopback(host))
        return cls(token, open_reads=False)

    def _mac(self, purpose: str) -> str:
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    @property
    def session(self) -> str:
        """The session cookie's value."""
        return self._mac("session")

    @property
    def csrf(self) -> str:
        """The CSRF value a signed-in page carries."""
        return self._mac("csrf")

    def token_ok(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def signed_in(self, cookie: str | None, authorization: str | None) -> bool:
        """A valid session cookie, or ``Authorization: Bearer TOKEN``."""
        return self.by_bearer(authorization) or (
            cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())
        )

    def by_bearer(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def may_read(self, cookie: str | None, authorization: str | None) -> bool:
        return self.open_reads or self.signed_in(cookie, authorization)

    def write_refusal(
        self,
        *,
        cookie: str | None,
        authorization: str | None,
        csrf: str | None,
        origin: str | None,
        own_origin: str,
    ) -> str | None:
        """Why a state-changing request is refused (``None``: it is allowed)."""
        if self.by_bearer(authorization):
            return None  # a script with the token: no ambient credential to abuse
        if not self.signed_in(cookie, None):
            return "sign in first: open the console URL with ?token=... (printed at start)"
        if origin is not None and origin != own_origin:
            return f"cross-site request refused (Origin {origin[:100]!r})"
        if csrf is None or not hmac.compare_digest(csrf.encode(), self.csrf.encode()):
            return "missing or wrong CSRF value: reload the page and try again"
        return None
