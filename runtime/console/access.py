"""Who may see the console: it shows invocation logs and model folders, so by default it is on only when the server
listens on a loopback address, and then answers only requests addressed to a loopback host name (a page on another
site cannot rebind its own name to 127.0.0.1 and read it). ``FLORENCE_CONSOLE=1`` turns it on for any address."""

from __future__ import annotations

import ipaddress

from runtime.config import ServerSettings
from runtime.route_table import CONSOLE

CONSOLE_PREFIX = CONSOLE.path
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """``host`` is a loopback name or address (``127.0.0.1``, ``[::1]``, ``localhost``), without a port."""
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def console_enabled(server: ServerSettings) -> bool:
    if server.console is not None:
        return server.console
    return is_loopback_host(server.host)


def host_of(host_header: str) -> str:
    """The host part of a ``Host`` header: ``127.0.0.1:8000`` -> ``127.0.0.1``, ``[::1]:8000`` -> ``[::1]``."""
    value = host_header.strip()
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value
