"""Who may draw on the images API: the key requests must send, read where ``ps`` and the shell history do not show
it (a file or an environment variable), and a refusal to serve other machines without one."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

API_KEY_VARIABLE = "PIXART_API_KEY"


def api_key_of(key: str | None = None, key_file: Path | None = None, environ: dict | None = None) -> str | None:
    """The key requests must send as ``Authorization: Bearer KEY``: ``key_file``'s first line, else ``key``, else
    ``$PIXART_API_KEY``; None serves without one."""
    if key and key_file:
        raise ValueError("Give the API key once: --api-key-file FILE (or $PIXART_API_KEY), not --api-key too.")
    if key_file:
        lines = Path(key_file).read_text().splitlines()
        if not lines or not lines[0].strip():
            raise ValueError(f"The API key file {key_file} is empty: write the key on its first line.")
        return lines[0].strip()
    return key or (os.environ if environ is None else environ).get(API_KEY_VARIABLE) or None


def is_authorized(header: str | None, key: str | None) -> bool:
    """Whether a request's ``Authorization`` header carries the key, compared in constant time (no timing hint)."""
    return key is None or hmac.compare_digest((header or "").encode(), f"Bearer {key}".encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: other machines may reach it
        return False


def check_exposure(host: str, key: str | None, insecure: bool = False) -> None:
    """Refuse to serve other machines without a key, unless asked to (``--insecure``)."""
    if key is None and not insecure and not is_loopback(host):
        raise ValueError(f"Serving on {host} without an API key lets anyone who reaches this machine draw on it: give "
                         f"--api-key-file FILE (or ${API_KEY_VARIABLE}), or --insecure to serve openly.")
