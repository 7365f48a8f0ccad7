"""A small pool of ``grpc.aio`` channels per downstream service, with TLS and channel options.

Channels are created lazily and handed out round-robin. Each channel of a pool of more than one
uses a local subchannel pool, so that it really owns its own connection: without that, grpcio
shares one subchannel between channels with identical targets and arguments and the pool would
multiplex everything onto a single HTTP/2 connection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import TLSConfig

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest message sent, and received unless the service sets ``max_response_bytes``."""

KEEPALIVE_TIME_MS = 60_000
"""Client keepalive pings; servers reject pings more frequent than every 30 s by default."""

KEEPALIVE_TIMEOUT_MS = 20_000


def channel_options(
    *, local_subchannels: bool = False, max_receive: int = MAX_MESSAGE_BYTES
) -> list[tuple[str, Any]]:
    """Return the channel arguments every downstream channel uses.

    Channel-level retries keep grpcio's default (transparent retries of RPCs that never left
    the client); no service-config retry policy is set, because the engine owns retries and the
    two layers would multiply.

    Args:
        local_subchannels: give the channel its own subchannel pool (own connection).
        max_receive: the largest message received (the service's ``max_response_bytes``).
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.enable_retries", 1),
    ]
    if local_subchannels:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CallError(
            Code.FAILED_PRECONDITION,
            f"cannot read TLS {what} file {path}: {exc.strerror or exc}",
            permanent=True,
        ) from exc


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    """Build client credentials from a ``TLSConfig`` (system roots when ``ca`` is None).

    Raises:
        CallError: FAILED_PRECONDITION (permanent) when a file cannot be read or only one of
            ``cert``/``key`` is given.
    """
    if (tls.cert is None) != (tls.key is None):
        raise CallError(
            Code.FAILED_PRECONDITION, "TLS cert and key must be given together", permanent=True
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "ca"),
        private_key=_read(tls.key, "key"),
        certificate_chain=_read(tls.cert, "cert"),
    )


class ChannelPool:
    """``size`` channels to one target, created on first use and handed out round-robin.

    Args:
        target: any gRPC target (``host:port``, ``dns:///…``, ``unix:…``).
        size: number of channels (at least 1).
        tls: client TLS, or None for plaintext.
        max_receive: the largest message received on these channels.
    """

    def __init__(
        self,
        target: str,
        size: int = 1,
        tls: TLSConfig | None = None,
        max_receive: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.max_receive = max_receive
        self.size = max(1, size)
        self._tls = tls
        self._channels: list[grpc.aio.Channel | None] = [None] * self.size
        self._next = 0
        self._credentials: grpc.ChannelCredentials | None = None
        self._closed = False

    def _make(self) -> grpc.aio.Channel:
        options = channel_options(local_subchannels=self.size > 1, max_receive=self.max_receive)
        if self._tls is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        if self._credentials is None:
            self._credentials = channel_credentials(self._tls)
        if self._tls.server_name:
            options.append(("grpc.ssl_target_name_override", self._tls.server_name))
        return grpc.aio.secure_channel(self.target, self._credentials, options=options)

    def next_index(self) -> int:
        """Return the index of the next channel in round-robin order."""
        index = self._next
        self._next = (index + 1) % self.size
        return index

    def channel(self, index: int) -> grpc.aio.Channel:
        """Return channel ``index``, creating it if needed.

        Raises:
            CallError: UNAVAILABLE once the pool is closed; FAILED_PRECONDITION for bad TLS
                files.
        """
        if self._closed:
            raise CallError(Code.UNAVAILABLE, f"channels to {self.target} are closed")
        channel = self._channels[index]
        if channel is None:
            channel = self._channels[index] = self._make()
        return channel

    def get(self) -> grpc.aio.Channel:
        """Return the next channel in round-robin order (see ``channel``)."""
        return self.channel(self.next_index())

    @property
    def closed(self) -> bool:
        """True once ``close`` has been called."""
        return self._closed

    @property
    def open_channels(self) -> int:
        """How many channels have been created so far."""
        return sum(1 for c in self._channels if c is not None)

    async def close(self) -> None:
        """Close every channel; later ``get`` calls fail with UNAVAILABLE."""
        self._closed = True
        channels = [c for c in self._channels if c is not None]
        self._channels = [None] * self.size
        for channel in channels:
            await channel.close()
