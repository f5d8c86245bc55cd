"""Where Runstream may send a request on a client's behalf (webhooks): not to
itself nor into the private network it runs in (SSRF), unless allowed.

A host name is resolved and every address it resolves to must be public: one
private address among public ones is refused too, since the connection may use
any of them. The check runs when the job is created (a clear 422) and again
before every attempt (a name may have been re-pointed since).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class DestinationRefused(Exception):
    """The URL may not be sent to; the message says why, for the client."""


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or address.is_reserved or address.is_unspecified or address.is_multicast:
        return "a private or reserved address"
    if not address.is_global:
        return "a non-public address"
    return None


def check_url_form(url: str) -> str:
    """The host of an http(s) URL; DestinationRefused for any other form."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise DestinationRefused("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("must not carry credentials (user:password@)")
    return parts.hostname


async def check_destination(url: str, *, allow_private: bool, resolve_timeout_s: float) -> None:
    """Raise DestinationRefused when ``url`` is malformed, or points (literally or
    once resolved) at a loopback, private or link-local address and
    ``allow_private`` is off. A name that does not resolve is not refused here:
    it fails at send time, where it is checked again."""
    host = check_url_form(url)
    if allow_private:
        return
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), resolve_timeout_s
            )
        except (OSError, TimeoutError):
            return
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        reason = _refusal(address)
        if reason is not None:
            raise DestinationRefused(f"{host} is {reason} ({address}); webhooks go to public addresses only")
