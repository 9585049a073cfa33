"""Turn TLS mistakes into errors that name the fix.

distributed reports a ``tls://`` address without ``security=`` as a ``TypeError`` about
``ssl_context``, and a ``tcp://`` connection to a TLS hub as "Connection reset by peer".
:func:`check_client_security` and :func:`explain_connect_failure` say what is wrong
instead; :func:`tls_refusal` tells a refused certificate (permanent: fail at once) from
an unreachable hub (transient: retry).
"""

from __future__ import annotations

import socket
import ssl

import dask
from distributed.comm import parse_address
from distributed.comm.addressing import parse_host_port
from distributed.security import Security

HOW_TO_SECURE = (
    "pass security=federation.security.security(CA_FILE, CERT, KEY) with the federation's "
    "CA and a certificate issued for you (dask federation certs issue CA_DIR --user NAME)"
)


def check_client_security(address: str, security: Security | None) -> None:
    """Raise ``ValueError`` naming the fix for a ``tls://`` address without credentials."""
    if not address.startswith("tls://") or security is not None:
        return
    if dask.config.get("distributed.comm.tls.ca-file", None):
        return  # credentials from dask's config (distributed.comm.tls.*)
    raise ValueError(f"the hub at {address} uses TLS; {HOW_TO_SECURE}")


def speaks_tls(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a TLS server answers at ``host:port`` (a TLS handshake gets a server hello).

    A plain-TCP Dask server answers a ClientHello with silence or by closing; a TLS hub
    completes the handshake or sends a TLS alert (it wants a client certificate).
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout) as raw:
            with ctx.wrap_socket(raw):
                return True
    except ssl.SSLError as e:
        return "ALERT" in (e.reason or "").upper()
    except OSError:
        return False


def explain_connect_failure(address: str, error: BaseException) -> str | None:
    """Why connecting to ``address`` failed, if it is a TLS mix-up; else ``None``."""
    scheme, location = parse_address(address)
    if scheme != "tcp":
        return None
    host, port = parse_host_port(location)
    if port is None or not speaks_tls(host, port):
        return None
    return (
        f"the hub at {address} speaks TLS, not plain TCP ({type(error).__name__}: {error}); "
        f"connect to tls://{location} and {HOW_TO_SECURE}"
    )


def tls_refusal(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed connection (a certificate refused), if any."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, ssl.SSLError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
