"""The agent console's configuration, served beside its files (services/console).

The page learns where the four services answer from `GET /console/config.json` on the origin
that served it, never from its own URL: a link that named another origin would otherwise make the
page send the agent's API key there. The same origins are the page's CSP connect-src.
"""

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from servicekit.security_headers import page_policy

FILES = Path(__file__).resolve().parents[1] / "console"
PREFIX = "/console"
SERVICES = ("intake", "case", "notification", "analytics")


def origin(url: str) -> str:
    """An http(s) origin as written in settings (a trailing / is dropped); ValueError otherwise."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ValueError(f"not an http(s) origin like https://crm.example.com:8443: {url!r}")
    if parts.username or parts.password:
        raise ValueError(f"an origin carries no user or password: {url!r}")
    return url


Origin = Annotated[str, AfterValidator(origin)]


def service_urls(settings: object) -> dict[str, str]:
    """The four services' public origins from settings (console_<service>_url)."""
    return {name: getattr(settings, f"console_{name}_url") for name in SERVICES}


def content_security(settings: object) -> dict[str, str]:
    return {PREFIX: page_policy(list(service_urls(settings).values()))}


router = APIRouter()


@router.get(f"{PREFIX}/config.json", include_in_schema=False)
async def console_config(request: Request) -> JSONResponse:
    # Open like the page itself: it is read before sign-in and holds nothing secret.
    settings = request.app.state.runtime.settings
    return JSONResponse({"services": service_urls(settings)}, headers={"Cache-Control": "no-store"})
