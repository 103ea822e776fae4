"""Why the process cannot serve a platform, as one line the operator can act on (never a traceback).

    StartupError        a platform refused a credential, could not be reached, or ended its connection
                        for good; `str()` is "<what failed>: <how to fix it>", naming the variable
    └── unreachable()   builds one for an API that could not be reached (refused, unknown host, timeout)

Adapters raise it from `start()` (and Discord's gateway task, which can be refused after the login);
`service.cli.main` prints it and exits with its own status.
"""

from __future__ import annotations

import errno
import ssl

import aiohttp
import yarl


class StartupError(Exception):
    """A platform the bot cannot serve; `str()` is the one line the operator sees."""

    def __init__(self, what: str, fix: str) -> None:
        # One line whatever a platform's message holds: the caller prints it as is.
        self.what = " ".join(what.split())
        self.fix = " ".join(fix.split())
        super().__init__(f"{self.what}: {self.fix}")


def unreachable(variable: str, url: str, default_url: str, status_page: str, error: BaseException) -> StartupError:
    """The API at `url` (set by `variable`) could not be reached: which kind of failure, not the raw error."""
    shown = str(yarl.URL(url).with_user(None))  # a proxy URL's credentials stay out of the line
    if url.rstrip("/") == default_url.rstrip("/"):
        fix = f"check this machine's network, DNS and firewall, and {status_page}"
    else:
        fix = f"check {variable} (or unset it to use {default_url}) and this machine's network"
    return StartupError(f"{variable} {shown} could not be reached ({_reason(error)})", fix)


def _reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, (aiohttp.ClientSSLError, ssl.SSLError)):
        return "TLS handshake failed"
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return f"network error {type(error).__name__}"
