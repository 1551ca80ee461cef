"""Telling the upload pipeline: signed HTTP callbacks.

The signature scheme is the one webhook senders commonly use: HMAC-SHA256 over
``"<timestamp>.<body>"`` with a shared key, sent as

    X-PhotoSentry-Timestamp: 1763788800
    X-PhotoSentry-Signature: v1=<hex digest>

so a receiver can reject both forged bodies and replays of old ones. A callback that
keeps failing is given up after its retries; the verdict itself is recorded elsewhere
first, so a dead receiver never loses it.

Where a callback may go is a :class:`CallbackPolicy`, because the URL comes from the
job payload, and anyone who can write to the queue writes that. Without one, a job
could make the worker POST to the cloud metadata service, to Redis on localhost, or
to any internal address. The policy checks the scheme, the host (and, when allowed
URLs are configured, scheme, host, port and path prefix part by part, never as a
string prefix: ``https://app.example@evil.example/`` is not under
``https://app.example``), then resolves the host and refuses it if *any* address is
loopback, link-local, multicast, unspecified, reserved, a known metadata address or
otherwise not globally routable (private networks, shared address space), unless that
address is in an allowed network. The request then goes to exactly the
addresses that were checked (a second DNS answer cannot swap in another), with TLS
still verified against the host name, and redirects are never followed.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ..errors import CallbackRefused

TIMESTAMP_HEADER = "X-PhotoSentry-Timestamp"
SIGNATURE_HEADER = "X-PhotoSentry-Signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
"""How old a signed callback may be before a receiver should refuse it as a replay."""
DEFAULT_BACKOFF_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
"""Waits between attempts: five attempts over about 7.5 s."""
DEFAULT_ATTEMPT_TIMEOUT_S = 5.0
"""Longest one attempt may take, connecting, sending and reading the answer together."""
MAX_ADDRESSES_TRIED = 3
"""A host's addresses one attempt tries, in resolver order, within the attempt's deadline."""


class CallbackSigner:
    """Signs and verifies callback bodies with a shared key (never shown in reprs)."""

    def __init__(self, key: bytes | str) -> None:
        key = key.encode("utf-8") if isinstance(key, str) else key
        if len(key) < 16:
            raise ValueError("callback signing key must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "CallbackSigner(key=<redacted>)"

    def item_mac(self, *parts: str) -> str:
        """A MAC over ``parts`` with a key derived from the signing key: what a worker puts
        on a callback it queues, so a delivery thread signs only callbacks a worker wrote
        (anyone who can write to Redis could otherwise have it sign their own)."""
        key = hmac.new(self._key, b"photosentry callback outbox v1", hashlib.sha256).digest()
        return hmac.new(key, "\x00".join(parts).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def signature(self, body: bytes, timestamp: int) -> str:
        mac = hmac.new(self._key, f"{timestamp}.".encode() + body, hashlib.sha256)
        return f"{SIGNATURE_VERSION}={mac.hexdigest()}"

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: self.signature(body, ts)}

    def verify(
        self, body: bytes, headers: Mapping[str, str], *, tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None
    ) -> bool:
        """True if ``headers`` carry a valid, fresh signature of ``body``."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            ts = int(lowered[TIMESTAMP_HEADER.lower()])
            given = lowered[SIGNATURE_HEADER.lower()]
        except (KeyError, ValueError):
            return False
        if abs((time.time() if now is None else now) - ts) > tolerance_s:
            return False
        return hmac.compare_digest(given, self.signature(body, ts))


@dataclass(frozen=True)
class CallbackResult:
    """How a callback went: delivered or not, after how many attempts, last status."""

    delivered: bool
    attempts: int
    status: int | None
    error: str = ""
    #: True when the policy refused the URL: nothing was sent at all.
    refused: bool = False
    #: Whether another attempt may help (network error, 5xx, 408, 429).
    retryable: bool = False


METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean instance metadata
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
        "168.63.129.16",  # Azure wire server
    )
)
"""Cloud metadata endpoints: credentials live there. Refused unless their network is allowed."""

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.x.x to the local host
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address wrapped for a NAT64 gateway

Resolver = Callable[..., list[tuple]]


def _effective(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 one really reaches (mapped, 6to4 or NAT64), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:  # 2002:7f00:1:: wraps 127.0.0.1 for a 6to4 relay
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def internal_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is off limits by default (``loopback``, ``metadata`` ...), or None."""
    ip = _effective(ip)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_loopback or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified or ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        # Private networks (10/8, 172.16/12, 192.168/16, fc00::/7), shared address space
        # (100.64/10), benchmarking and documentation ranges: where a platform's own
        # services listen. A job names the URL, so reaching them takes the operator's say.
        return "private"
    return None


@dataclass(frozen=True)
class _Allowed:
    scheme: str
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class Target:
    """A checked callback URL: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    #: Path and query to request.
    path: str
    #: The checked addresses, in resolver order; the request goes to one of these only.
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class CallbackPolicy:
    """Where callbacks may go (see the module docstring).

    Args:
        allow_prefixes: when not empty, a callback URL must fall under one of these
            (``https://app.example/hooks/``: same scheme, same host, same port, and a
            path under that path).
        allow_networks: networks callbacks may reach although they are internal by
            default, e.g. ``127.0.0.0/8`` for a receiver on the same host.
        schemes: URL schemes allowed at all.
    """

    allow_prefixes: tuple[str, ...] = ()
    allow_networks: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ("https", "http")
    _allowed: tuple[_Allowed, ...] = field(init=False, repr=False, compare=False)
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(init=False, repr=False,
                                                                                  compare=False)

    def __post_init__(self) -> None:
        allowed = []
        for prefix in self.allow_prefixes:
            parts = urlsplit(prefix)
            if parts.scheme not in self.schemes or not parts.hostname or parts.username or parts.password:
                raise ValueError(f"callback prefix {prefix!r} must be scheme://host[:port][/path]"
                                 f" with a scheme in {list(self.schemes)}")
            allowed.append(_Allowed(parts.scheme, parts.hostname.lower(), _port(parts), parts.path or "/"))
        object.__setattr__(self, "_allowed", tuple(allowed))
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)
        except ValueError as exc:
            raise ValueError(f"callback network: {exc}") from exc
        object.__setattr__(self, "_networks", networks)

    def check(self, url: str, *, resolve: Resolver = socket.getaddrinfo) -> Target:
        """The target ``url`` names, once every rule passed.

        Raises:
            CallbackRefused: the scheme, host, port, path or an address is not allowed,
                or the host does not resolve.
        """
        try:
            parts = urlsplit(url)
            port = _port(parts)
        except ValueError as exc:
            raise CallbackRefused(f"callback URL is malformed: {exc}") from exc
        if parts.scheme not in self.schemes:
            raise CallbackRefused(f"callback scheme {parts.scheme!r} is not allowed (only {list(self.schemes)})")
        host = (parts.hostname or "").lower()
        if not host:
            raise CallbackRefused("callback URL has no host")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused("callback URLs may not carry credentials")
        path = parts.path or "/"
        if self._allowed and not any(
            a.scheme == parts.scheme and a.host == host and a.port == port and _under(path, a.path)
            for a in self._allowed
        ):
            raise CallbackRefused(f"callback to {parts.scheme}://{host}:{port}{path} is not under an allowed prefix")
        try:
            infos = resolve(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            raise CallbackRefused(f"callback host {host!r} does not resolve: {exc}") from exc
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(address)
            except ValueError as exc:
                raise CallbackRefused(f"callback host {host!r} resolved to {address!r}, not an address") from exc
            why = internal_reason(ip)
            if why is not None and not any(_effective(ip) in n or ip in n for n in self._networks):
                raise CallbackRefused(f"callback host {host!r} resolves to {why} address {ip}; allow its network"
                                      " explicitly to call it")
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise CallbackRefused(f"callback host {host!r} has no address")
        query = f"?{parts.query}" if parts.query else ""
        return Target(parts.scheme, host, port, path + query, tuple(addresses))


DEFAULT_POLICY = CallbackPolicy()
"""http(s) to any host that resolves to no internal address."""


def _port(parts: object) -> int:
    port = parts.port  # type: ignore[attr-defined]  # raises ValueError when out of range
    if port is not None:
        return int(port)
    return 443 if parts.scheme == "https" else 80  # type: ignore[attr-defined]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _retryable(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _send(target: Target, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST to the checked addresses only; returns the HTTP status (no redirect followed).

    The whole exchange ends within ``timeout_s``: a socket timeout bounds each read, but a
    receiver dripping one byte at a time would reset it forever, so a timer shuts the
    socket down at the deadline whatever is in progress.
    """
    opened: list[socket.socket] = []
    deadline = time.monotonic() + timeout_s

    def connect(_address: tuple[str, int], timeout: float | None = None, source: object = None) -> socket.socket:
        # One deadline for every address tried: seven addresses that drop SYNs once took
        # seven full timeouts.
        last: OSError | None = None
        for ip in target.addresses[:MAX_ADDRESSES_TRIED]:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                sock = socket.create_connection((ip, target.port), left)
            except OSError as exc:
                last = exc
                continue
            opened.append(sock)
            return sock
        raise last or OSError("no address answered in time")

    def cut() -> None:
        for sock in opened:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout_s,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    conn._create_connection = connect  # type: ignore[attr-defined]  # pin the checked addresses
    cutter = threading.Timer(timeout_s, cut)
    cutter.daemon = True
    cutter.start()
    try:
        conn.request("POST", target.path, body=body, headers=dict(headers))
        response = conn.getresponse()
        response.read(64 * 1024)  # a receiver's reply is not ours to keep
        return response.status
    finally:
        cutter.cancel()
        conn.close()


def attempt_callback(
    url: str,
    body: bytes,
    signer: CallbackSigner,
    *,
    policy: CallbackPolicy = DEFAULT_POLICY,
    timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    resolve: Resolver = socket.getaddrinfo,
) -> CallbackResult:
    """One signed POST of ``body`` to ``url``, within ``timeout_s`` in all.

    ``url`` is checked against ``policy`` first (and resolved once); a refused URL is
    never contacted. ``retryable`` in the result says whether another attempt may
    help: network errors, 5xx, 408 and 429 may; other answers (a 4xx, a redirect,
    which is never followed) are final. Never raises for network or HTTP failures.
    """
    try:
        target = policy.check(url, resolve=resolve)
    except CallbackRefused as exc:
        return CallbackResult(False, 0, None, f"refused: {exc}", refused=True)
    headers = {"Content-Type": "application/json", **signer.headers(body)}
    try:
        status = _send(target, body, headers, timeout_s)
    except (OSError, http.client.HTTPException) as exc:
        return CallbackResult(False, 1, None, f"{type(exc).__name__}: {exc}", retryable=True)
    if 200 <= status < 300:
        return CallbackResult(True, 1, status)
    error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
    return CallbackResult(False, 1, status, error, retryable=_retryable(status))


def post_callback(
    url: str,
    body: bytes,
    signer: CallbackSigner,
    *,
    policy: CallbackPolicy = DEFAULT_POLICY,
    backoff_s: Sequence[float] = DEFAULT_BACKOFF_S,
    timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
    resolve: Resolver = socket.getaddrinfo,
) -> CallbackResult:
    """:func:`attempt_callback` with retries and backoff, waiting in the caller's thread.

    For callers where waiting is fine (a moderator's decision); queue workers deliver
    through the :mod:`~photosentry.worker.outbox` instead, off the scan path.
    """
    result = CallbackResult(False, 0, None)
    attempts = 0
    for wait in (0.0, *backoff_s):
        if wait:
            sleep(wait)
        result = attempt_callback(url, body, signer, policy=policy, timeout_s=timeout_s, resolve=resolve)
        attempts += result.attempts
        if result.delivered or result.refused or not result.retryable:
            break
    return replace(result, attempts=attempts)
