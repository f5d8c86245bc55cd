"""The public base URL of this API, for the absolute URLs it hands out.

A browser app on another origin, or behind a proxy or a mount prefix, must be able
to use ``events_url`` and ``cancel_url`` as they are. The base is the request's
scheme and ``Host`` with this app's ``root_path``: the prefix it is served at
(``--root-path``, and a host application's mount). Behind a reverse proxy that is trusted
(``RUNSTREAM_TRUST_PROXY_HEADERS``), ``X-Forwarded-Proto``, ``X-Forwarded-Host``
and ``X-Forwarded-Prefix`` say what the client really asked for; untrusted, they
are ignored, so no client can make the API hand out links to another host.
"""

from __future__ import annotations

from starlette.requests import Request


def _first(value: str) -> str:
    # A chain of proxies appends: the first value is what the client sent.
    return value.split(",")[0].strip()


def public_base_url(request: Request) -> str:
    """The URL that ``/api/...`` paths are appended to, without a trailing slash."""
    # Starlette's base_url is the outermost app's (url_for across a whole host);
    # Runstream's routes live under its own root_path, the mount prefix included.
    base = request.base_url.replace(path=request.scope.get("root_path", "").rstrip("/") + "/")
    if request.app.state.settings.trust_proxy_headers:
        headers = request.headers
        if proto := _first(headers.get("x-forwarded-proto", "")):
            if proto in ("http", "https"):
                base = base.replace(scheme=proto)
        if host := _first(headers.get("x-forwarded-host", "")):
            base = base.replace(netloc=host)
        if prefix := _first(headers.get("x-forwarded-prefix", "")).rstrip("/"):
            base = base.replace(path=prefix + base.path)
    return str(base).rstrip("/")
