"""What a test-build request may be, before it reaches Portage: a plain
package atom, USE flags from the admin's list, an email address, a webhook
URL; and the token bucket that limits how often a token may ask.

Each check raises InvalidArgument (400) with one line saying why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from swarm.controller.errors import InvalidArgument

MAX_ATOM = 200
MAX_EMAIL = 254
MAX_WEBHOOK = 2048
MAX_USE = 32  # flags in one request

# PMS: category and package names, and versions (3.1.1, 3.1.2, 3.2).
_CATEGORY = r"[A-Za-z0-9_][A-Za-z0-9+_.-]*"
_VERSION = r"[0-9]+(?:[.][0-9]+)*[a-z]?(?:_(?:alpha|beta|pre|rc|p)[0-9]*)*(?:-r[0-9]+)?"
# A name does not end in a hyphen and what reads as a version.
_NAME = rf"[A-Za-z0-9_](?:[A-Za-z0-9+_]|-(?!{_VERSION}(?:-|\Z)))*"
ATOM_RE = re.compile(rf"^(?:{_CATEGORY}/{_NAME}|={_CATEGORY}/{_NAME}-{_VERSION})\Z")
USE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+_@-]{0,63}\Z")  # PMS 3.1.4
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}\Z")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_SHELL = set(";|&$`<>(){}\\\"' \t\n\r!?#~^")
RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RATE_RE = re.compile(r"^([1-9][0-9]{0,5})/([smhd])\Z")


def _quoted(value: str) -> str:
    return repr(value[:60]) + ("..." if len(value) > 60 else "")


def check_atom(value: object) -> str:
    """A plain package atom: ``category/name`` or ``=category/name-version[-rN]``."""
    if not isinstance(value, str):
        raise InvalidArgument("package must be a string: category/name or =category/name-version")
    atom = value.strip()
    if not atom:
        raise InvalidArgument("package must not be empty")
    if len(atom) > MAX_ATOM:
        raise InvalidArgument(f"package is longer than {MAX_ATOM} characters")
    if ATOM_RE.fullmatch(atom):
        return atom
    raise InvalidArgument(f"package {_quoted(atom)} is {_what_instead(atom)}")


def _what_instead(atom: str) -> str:
    """Why ``atom`` is not a plain package atom, for the error."""
    plain = "not a plain package atom (category/name or =category/name-version)"
    if atom.startswith(("/", "./", "../", "~/")) or "/../" in atom or atom.endswith("/.."):
        return "a path, not a package atom"
    if atom.startswith("@"):
        return "a package set: ask for one package"
    if atom.startswith("!"):
        return "a blocker: ask for a package"
    if atom.startswith(("<", ">", "~")) and ATOM_RE.fullmatch("=" + atom.lstrip("<>=~")):
        return "a version range: use =category/name-version for one version"
    if any(c in _SHELL for c in atom.replace("~", "")) or any(ord(c) < 32 or ord(c) == 127 for c in atom):
        return "not a package atom: it holds shell metacharacters or spaces"
    if "*" in atom:
        return "a wildcard: ask for one package"
    if "[" in atom:
        return 'a USE dependency: give USE flags in "use" instead'
    if ":" in atom:
        return "a slot or repository dependency: ask for category/name or =category/name-version"
    if atom.startswith("=") and ATOM_RE.fullmatch(atom[1:]):
        return "missing its version after '=': =category/name-version"
    if "/" not in atom:
        return "missing its category: category/name"
    if not atom.startswith("=") and ATOM_RE.fullmatch("=" + atom):
        return "a version without '=': =category/name-version"
    return plain


def check_use(value: object, allowed: frozenset[str]) -> tuple[str, ...]:
    """USE flags ("foo" to enable, "-foo" to disable), each from ``allowed``; sorted, once each."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument('use must be a list of USE flags, like ["foo", "-bar"]')
    if len(value) > MAX_USE:
        raise InvalidArgument(f"use holds {len(value)} flags: at most {MAX_USE}")
    flags: dict[str, str] = {}
    for raw in value:
        flag = raw[1:] if raw.startswith("-") else raw
        if not USE_RE.fullmatch(flag):
            raise InvalidArgument(f"use: {_quoted(raw)} is not a USE flag")
        if flag not in allowed:
            if not allowed:
                raise InvalidArgument("use: this swarm allows no USE flags in test builds")
            raise InvalidArgument(
                f"use: {flag!r} is not allowed in test builds (allowed: {', '.join(sorted(allowed))})"
            )
        if flag in flags and flags[flag] != raw:
            raise InvalidArgument(f"use: {flag!r} is both enabled and disabled")
        flags[flag] = raw
    return tuple(sorted(flags.values()))


def _check_host(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def check_email(value: object) -> str:
    """An address to mail the result to, or "" for none."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidArgument("notify must be an email address")
    if len(value) > MAX_EMAIL:
        raise InvalidArgument(f"notify is longer than {MAX_EMAIL} characters")
    local, at, domain = value.rpartition("@")
    if not at or not _EMAIL_LOCAL.fullmatch(local) or ".." in local or not _check_host(domain):
        raise InvalidArgument(f"notify {_quoted(value)} is not an email address like name@example.org")
    return value


ANY_HOST = "*"


def check_webhook(value: object, hosts: frozenset[str] = frozenset({ANY_HOST})) -> str:
    """An http(s) URL to POST the result to, or "" for none. ``hosts``: the
    host names the admin lets a webhook reach (ANY_HOST: any), since a token
    holder's webhook is a request the controller makes inside its network."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InvalidArgument("webhook must be an http:// or https:// URL")
    if len(value) > MAX_WEBHOOK:
        raise InvalidArgument(f"webhook is longer than {MAX_WEBHOOK} characters")
    problem = f"webhook {_quoted(value)} is not an http:// or https:// URL"
    if any(ord(c) <= 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(problem)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise InvalidArgument(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise InvalidArgument(problem)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("webhook must not hold credentials (user:password@)")
    if parts.fragment:
        raise InvalidArgument("webhook must not have a #fragment")
    if not hosts:
        raise InvalidArgument(
            "this controller sends no webhooks (its admin allows hosts with --test-build-webhook-hosts)"
        )
    if ANY_HOST not in hosts and parts.hostname.lower() not in hosts:
        raise InvalidArgument(
            f"webhook host {_quoted(parts.hostname)} is not one this controller posts to "
            "(--test-build-webhook-hosts)"
        )
    return value


def check_user(value: object) -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise InvalidArgument(
            "user must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class Rate:
    """Requests per period: ``count`` every ``seconds``."""

    count: int
    seconds: int

    @classmethod
    def parse(cls, text: object) -> Rate:
        """From "5/h" (per second, minute, hour or day: s, m, h, d)."""
        found = RATE_RE.fullmatch(text) if isinstance(text, str) else None
        if found is None:
            raise InvalidArgument(f"rate must be like 5/h (a count per s, m, h or d), not {text!r:.40}")
        return cls(int(found.group(1)), RATE_UNITS[found.group(2)])

    def __str__(self) -> str:
        unit = next(u for u, s in RATE_UNITS.items() if s == self.seconds)
        return f"{self.count}/{unit}"

    @property
    def interval(self) -> float:
        """Seconds for one request to come back."""
        return self.seconds / self.count


class Bucket:
    """A token bucket: ``burst`` requests at once, refilled at ``rate``."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: Rate, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.rate.interval)
            self.at = now

    def take(self, now: float) -> float:
        """Take one request: 0 if it may go now, else the seconds until it may."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * self.rate.interval

    def give_back(self, now: float) -> None:
        """Return a request taken (it was never served)."""
        self._refill(now)
        self.tokens = min(float(self.burst), self.tokens + 1.0)


def retry_after(seconds: float) -> int:
    """Seconds for a Retry-After header: whole, at least one."""
    return max(1, math.ceil(seconds))
