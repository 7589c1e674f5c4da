"""Zeroconf: announce ``_rkllm._tcp`` with the models, so Home Assistant can discover the board."""

from __future__ import annotations

import ipaddress
import logging
import socket

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from .config import ServerConfig

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_rkllm._tcp.local."


def service_addresses(host: str) -> list[str]:
    """The addresses to announce: the bound one, or every IPv4 address of this machine."""
    try:
        bound = ipaddress.ip_address(host)
    except ValueError:
        return [socket.gethostbyname(host)]
    if not bound.is_unspecified:
        return [str(bound)]
    return [
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if ip.is_IPv4 and not ipaddress.ip_address(str(ip.ip)).is_loopback
    ]


def service_info(config: ServerConfig, version: str, port: int, name: str | None = None) -> ServiceInfo:
    """The announcement: where the server is (``port``: the one bound), its models and how to reach it."""
    instance = name or socket.gethostname().split(".")[0]
    return ServiceInfo(
        SERVICE_TYPE,
        f"{instance}.{SERVICE_TYPE}",
        port=port,
        parsed_addresses=service_addresses(config.host),
        properties={
            "models": ",".join(config.models),
            "version": version,
            "api": "ollama,openai",
            "auth": "bearer" if config.api_key else "none",
            "tls": "1" if config.tls_cert else "0",
        },
        server=f"{instance}.local.",
    )


class Announcer:
    """Registers the service while the server runs."""

    def __init__(self, info: ServiceInfo, host: str) -> None:
        self.info = info
        unspecified = host in ("0.0.0.0", "::", "")
        self._zeroconf = AsyncZeroconf(
            interfaces=InterfaceChoice.All if unspecified else [self.info.parsed_addresses()[0]],
            ip_version=IPVersion.V4Only,
        )

    async def start(self) -> None:
        """Announce (probing the name first, as mDNS requires)."""
        await self._zeroconf.async_register_service(self.info, allow_name_change=True)
        _LOGGER.info("Announced %s on port %d", self.info.name, self.info.port)

    async def stop(self) -> None:
        """Say goodbye and close the sockets."""
        await self._zeroconf.async_unregister_service(self.info)
        await self._zeroconf.async_close()
