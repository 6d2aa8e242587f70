"""A net under the SSRF guard: this process may open connections to loopback addresses only."""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any


class EgressTripwire:
    """Refuses, and records, every connection this process attempts to a non-loopback address.

    The SSRF guard is what keeps requests on loopback; this is the net under it, so that a broken guard fails
    the tests instead of sending traffic off the machine.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex

    def allowed(self, sock: socket.socket, address: Any) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        try:
            return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
        except ValueError:
            return False

    def connect(self, sock: socket.socket, address: Any) -> None:
        if not self.allowed(sock, address):
            self.blocked.append(str(address))
            raise ConnectionRefusedError(f"the test tripwire refused a connection to {address}")
        self._connect(sock, address)

    def connect_ex(self, sock: socket.socket, address: Any) -> int:
        if not self.allowed(sock, address):
            self.blocked.append(str(address))
            return errno.ECONNREFUSED
        return self._connect_ex(sock, address)

    def take_blocked(self) -> list[str]:
        """The refused attempts so far, forgotten here (for a test that expects some and checks them itself)."""
        blocked, self.blocked = self.blocked, []
        return blocked

    def install(self, patch: Any) -> None:
        """Route socket.socket's connect and connect_ex through the tripwire (``patch``: a pytest MonkeyPatch)."""
        tripwire = self

        def connect(sock: socket.socket, address: Any) -> None:
            tripwire.connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            return tripwire.connect_ex(sock, address)

        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
