"""HOST:PORT, the one parser for every address the project reads: the config file,
configuration entries' address books, member-add requests and redirects."""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]
MAX_HOST_CHARS = 253  # the longest DNS name


def parse_address(text: object) -> Address:
    """HOST:PORT, or ValueError (which never quotes more than the start of `text`)."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"address {_excerpt(text)} is not HOST:PORT")
    host, _, port = text.rpartition(":")
    if not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"address {_excerpt(text)} is not HOST:PORT")
    if len(host) > MAX_HOST_CHARS or not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError(f"address {_excerpt(text)} has an invalid host")
    return host, int(port)


def _excerpt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
