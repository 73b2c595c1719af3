"""Secrets out of everything the kit prints or logs: one redaction function.

:func:`redact` finds URLs (``scheme://...``) inside arbitrary text and replaces

* the password of the userinfo part (``redis://:hunter2@host/0``,
  ``postgresql://user:hunter2@host/db``) by ``***``, keeping the user name;
* the value of every credential query parameter (``?password=``, ``passwd``, ``pass``, ``pwd``,
  ``secret``, ``token``, ``auth``, ``sslpassword``, ``access_token``, ``api_key``... and any key
  that contains ``password``, ``secret`` or ``token``; case-insensitive) by ``***``;

and leaves the rest (scheme, user, host, port, path, other parameters) as it was, so messages
still say where the kit tried to connect. :func:`redact_url` does the same for one URL.

Every printer uses it: the CLI's error lines and ``--debug`` tracebacks, ``check`` (text and
JSON), ``history``, the storage and Redis error messages, the manager's ``stats``; and
:func:`install_log_redaction` puts a :class:`RedactingFilter` on the ``corec_plugin_kit``
loggers (and on the root handlers ``corec-kit run`` sets up) so every log line is redacted too.

A URL ends at the first whitespace: a password that holds a space (or a raw ``?`` or ``#``) must
be percent-encoded in the URL anyway for the drivers to read it, and then it is redacted whole.

Only ``re`` and ``logging`` are imported here: the CLI imports this module on every start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

#: Query parameter names whose values are secrets (compared lowercased).
CREDENTIAL_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "token",
        "auth",
        "sslpassword",
        "access_token",
        "refresh_token",
        "auth_token",
        "api_key",
        "apikey",
        "client_secret",
        "private_key",
        "key_password",
        "credentials",
    }
)
#: ...and any name containing one of these.
_CREDENTIAL_PARTS = ("password", "passwd", "secret", "token")

# A URL: a scheme (not glued to a longer word), "://", then everything up to whitespace.
_URL = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*)://(\S*)")
_HOSTPORT = r"(?:\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9.\-_~]*)(?::\d{1,5})?"
# One host and port, or a comma-separated list of them (PostgreSQL's multi-host URLs).
_HOSTS = re.compile(f"{_HOSTPORT}(?:,{_HOSTPORT})*")
# A query parameter inside a URL: its name and value (up to the next "&" or the end).
_PARAM = re.compile(r"([?&;])([^=&?#;\s]+)=([^&\s]*)")


def is_credential_param(name: str) -> bool:
    """True for a query parameter name whose value is a secret (``password``, ``token``...)."""
    key = name.lower()
    return key in CREDENTIAL_PARAMS or any(part in key for part in _CREDENTIAL_PARTS)


def userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the userinfo in ``rest`` (the URL after ``://``), or -1.

    The userinfo ends at the last ``@`` before the first ``?`` or ``#`` (so an ``@`` inside the
    password, or a ``/`` in it, does not cut it short, and an ``@`` in the query is not taken
    for it). When there is none there but one later, the password itself holds a raw ``?`` or
    ``#``: the last ``@`` of the URL is taken, unless what precedes the first ``/``, ``?`` or
    ``#`` is plainly a host and port (then the later ``@`` belongs to the path or query). An
    authority that is empty (``sqlite:///path``, ``unix:///socket``) has no userinfo.
    """
    if rest.startswith("/"):
        return -1
    cut = len(rest)
    for mark in "?#":
        where = rest.find(mark)
        if where != -1:
            cut = min(cut, where)
    at = rest.rfind("@", 0, cut)
    if at != -1:
        return at
    at = rest.rfind("@")
    if at == -1:
        return -1
    head = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if _HOSTS.fullmatch(head):
        return -1
    return at


def _redact_rest(rest: str) -> str:
    at = userinfo_end(rest)
    if at != -1:
        userinfo = rest[:at]
        colon = userinfo.find(":")
        if colon != -1:
            rest = f"{userinfo[: colon + 1]}{MASK}{rest[at:]}"
            at = colon + 1 + len(MASK)
        else:
            at = -1
    head, tail = (rest[: at + 1], rest[at + 1 :]) if at != -1 else ("", rest)

    def param(match: re.Match[str]) -> str:
        sep, name, value = match.groups()
        if value and value != MASK and is_credential_param(name):
            return f"{sep}{name}={MASK}"
        return match.group(0)

    return head + _PARAM.sub(param, tail)


def redact_url(url: str) -> str:
    """One URL with its userinfo password and credential query values replaced by ``***``.

    Text that is not a ``scheme://`` URL is returned as :func:`redact` would return it.
    """
    match = re.match(r"\s*([A-Za-z][A-Za-z0-9+.\-]*)://", url)
    if match is None:
        return redact(url)
    return url[: match.end()] + _redact_rest(url[match.end() :])


def redact(text: str) -> str:
    """``text`` with the secrets of every URL in it replaced by ``***`` (see the module doc)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: f"{m.group(1)}://{_redact_rest(m.group(2))}", text)


def redact_data(data: Any) -> Any:
    """A copy of JSON-like ``data`` (dicts, lists, strings) with every string redacted."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {key: redact_data(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(value) for value in data]
    return data


class RedactingFilter(logging.Filter):
    """Redacts each record's formatted message, exception text and stack (never drops one).

    The message is formatted (``msg % args``) and redacted once, so every handler downstream
    prints the redacted text; the traceback is formatted into ``exc_text``, which formatters
    print instead of formatting ``exc_info`` again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_corec_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the logging module's to report
            return True
        cleaned = redact(message)
        if cleaned != message:  # else keep msg and args apart (log tools group by msg)
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        setattr(record, "_corec_redacted", True)  # noqa: B010 - not a LogRecord attribute
        return True


_FILTER = RedactingFilter()
#: Loggers whose records are redacted where they are made (children are found by prefix).
LOGGER_PREFIXES = ("corec_plugin_kit", "corec_manager", "corec_generator", "corec_reviser")


def _add(filterer: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in filterer.filters):
        filterer.addFilter(_FILTER)


def install_log_redaction(
    *, root_handlers: bool = False, prefixes: Iterable[str] = LOGGER_PREFIXES
) -> None:
    """Put a :class:`RedactingFilter` on the kit's loggers, and on the root handlers if asked.

    A filter on a logger sees only the records made on that very logger, so it goes on every
    logger of the hierarchy that exists now (call this again after importing more of the kit;
    the runtime does when it starts). The root handlers' filter sees every record that reaches
    them, third-party libraries' included. Idempotent.
    """
    names = tuple(prefixes)
    for name in names:
        _add(logging.getLogger(name))
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(tuple(f"{n}." for n in names)):
            _add(logger)
    if root_handlers:
        for handler in logging.getLogger().handlers:
            _add(handler)


__all__ = [
    "CREDENTIAL_PARAMS",
    "MASK",
    "RedactingFilter",
    "install_log_redaction",
    "is_credential_param",
    "redact",
    "redact_data",
    "redact_url",
    "userinfo_end",
]
