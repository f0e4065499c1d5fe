"""The NATS side shared by both bridges: connecting (credentials, TLS),
the stream, and the session loop that reconnects with back-off.

Each session is one fresh connection.  nats-py's own reconnect is turned
off: after a reconnect it would flush its buffer of publishes made while
the link was down, behind the server's back of what the bridge decided
since (the out bridge re-reads the stream on each session instead), so a
lost connection ends the session, and the loop opens a new one.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError, ServiceUnavailableError

from ringshm.errors import RingError

#: Back-off between connection attempts: from BACKOFF_MIN seconds,
#: doubling up to BACKOFF_MAX.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
#: JetStream's duplicate window for a stream a bridge creates, seconds.
DUPLICATE_WINDOW = 120.0


class BridgeError(RingError):
    """A bridge cannot go on: a server that is not there at start, a stream
    that does not hold the subject, a message id that names this ring but
    a message it does not have."""


class SessionLost(Exception):
    """The connection of a session closed (the loop opens another)."""


@dataclass(frozen=True)
class NatsOptions:
    """How to reach the server.

    Args:
        url: ``nats://HOST:PORT`` (or ``tls://``), several separated by commas;
            user and password may be in the URL.
        creds: a NATS credentials file (JWT and NKey seed).
        tls_ca, tls_cert, tls_key: PEM files: the CA to trust, and this
            client's certificate and key for mutual TLS.
        tls_hostname: the name to check the server's certificate against.
        connect_timeout: seconds for one connection attempt.
    """

    url: str
    creds: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_hostname: Optional[str] = None
    connect_timeout: float = 2.0

    def tls_context(self) -> Optional[ssl.SSLContext]:
        """An SSLContext when any TLS file is given (else nats-py decides
        from the URL's scheme)."""
        if not (self.tls_ca or self.tls_cert):
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


async def connect(options: NatsOptions, lost: asyncio.Event) -> Client:
    """One connection attempt; `lost` is set when the connection closes.

    Raises:
        Exception: whatever nats-py raises when the server is unreachable
            (NoServersError, OSError, TimeoutError) or refuses us.
    """
    async def closed() -> None:
        lost.set()

    async def quiet(exc: Exception) -> None:
        # nats-py reports every socket error here too; the session loop
        # prints one line per outage instead.
        pass

    kwargs: dict[str, Any] = {}
    context = options.tls_context()
    if context is not None:
        kwargs["tls"] = context
    if options.tls_hostname:
        kwargs["tls_hostname"] = options.tls_hostname
    if options.creds:
        kwargs["user_credentials"] = options.creds
    return await nats.connect(
        servers=[url.strip() for url in options.url.split(",")],
        # One try per server (nats-py: 0 would mean for ever); the session
        # loop does the waiting, with back-off and a line on stderr.
        allow_reconnect=False, connect_timeout=options.connect_timeout,
        max_reconnect_attempts=1, reconnect_time_wait=0, closed_cb=closed, disconnected_cb=closed,
        error_cb=quiet, **kwargs)


async def ensure_stream(js: JetStreamContext, stream: str, subject: str) -> None:
    """Create `stream` for `subject` when missing (file storage, limits
    retention, a duplicate window of DUPLICATE_WINDOW seconds).

    Raises:
        BridgeError: the stream exists but does not take `subject`.
    """
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(StreamConfig(name=stream, subjects=[subject],
                                         storage=StorageType.FILE,
                                         duplicate_window=DUPLICATE_WINDOW))
        return
    subjects = info.config.subjects or []
    if subject not in subjects:
        raise BridgeError(f"stream {stream!r} takes {subjects}, not the subject {subject!r}")


def notice(role: str, text: str) -> None:
    """One line on stderr."""
    print(f"ringshm bridge {role}: {text}", file=sys.stderr, flush=True)


async def run_sessions(role: str, options: NatsOptions,
                       session: Callable[[Client, asyncio.Event], Awaitable[bool]],
                       wait_at_start: bool) -> None:
    """Run `session(client, lost)` on fresh connections until it returns
    True (done).  A session ends with SessionLost (or any connection error)
    when the connection goes; the next attempt waits with back-off, and an
    outage is told on stderr once, as is the recovery.  Another NATS error
    (JetStream still recovering after a restart, a refused request) ends the
    session the same way, after one line on stderr.  A server without
    JetStream (``nats-server`` without ``-js``) is told once, by name.

    Raises:
        BridgeError: the first attempt failed (to connect, or with a NATS
            error before any session ran: "JetStream is not enabled on
            nats://..." for a server without JetStream) and `wait_at_start`
            is False.
    """
    backoff = BACKOFF_MIN
    down_since_told = False
    told_no_jetstream = False
    first = True
    served = False   # a session has run (and ended) before
    while True:
        lost = asyncio.Event()
        try:
            client = await connect(options, lost)
        except Exception as exc:   # nats-py raises several kinds, none in common
            if first and not wait_at_start:
                raise BridgeError(f"cannot connect to NATS at {options.url}: "
                                  f"{_describe(exc)}") from None
            if not down_since_told:
                notice(role, f"NATS at {options.url} unreachable ({_describe(exc)}); "
                             "retrying with back-off")
                down_since_told = True
            first = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            continue
        if down_since_told:
            notice(role, f"connected to NATS at {options.url} again")
            down_since_told = False
        first = False
        try:
            if await session(client, lost):
                return
        except (SessionLost, nats.errors.ConnectionClosedError, nats.errors.TimeoutError,
                asyncio.TimeoutError, OSError) as exc:
            notice(role, f"connection to NATS lost ({_describe(exc)}); reconnecting")
            down_since_told = True
            backoff = BACKOFF_MIN
        except nats.errors.Error as exc:
            no_jetstream = _without_jetstream(client, exc)
            if not served and not wait_at_start:
                raise BridgeError(no_jetstream or f"NATS at {options.url}: {_describe(exc)}"
                                  ) from None
            if no_jetstream:
                # Until the server is restarted with JetStream: once.
                if not told_no_jetstream:
                    notice(role, f"{no_jetstream}; trying again with back-off")
                    told_no_jetstream = True
            else:
                notice(role, f"NATS error ({_describe(exc)}); trying again with back-off")
                down_since_told = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            served = True
            await _close(client)


def _without_jetstream(client: Client, exc: Exception) -> Optional[str]:
    """What to say when `exc` comes from a server that has no JetStream (a
    JetStream request nobody answers, and a server whose INFO does not
    offer JetStream), else None.  (A server with JetStream that is still
    recovering answers the same way, but offers it.)"""
    if not isinstance(exc, (ServiceUnavailableError, nats.errors.NoRespondersError)):
        return None
    info = getattr(client, "_server_info", None) or {}
    if info.get("jetstream"):
        return None
    url = client.connected_url
    where = (f"{url.scheme}://{url.hostname}:{url.port}" if url is not None and url.hostname
             else "the NATS server")
    return (f"JetStream is not enabled on {where}: the bridges store messages in a "
            f"JetStream stream (start the server with `nats-server -js`, or a `jetstream` "
            f"block in its configuration)")


async def _close(client: Client) -> None:
    try:
        await asyncio.wait_for(client.close(), 2.0)
    except Exception:   # closing a dead connection may fail any way: it is gone
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())
