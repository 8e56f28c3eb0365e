"""The agent console's configuration, served beside its files (services/console).

The page learns where the four services answer from `GET /console/config.json` on the origin
that served it, never from its own URL: a link that named another origin would otherwise make the
page send the agent's API key there. The same origins are the page's CSP connect-src.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from servicekit.security_headers import page_policy

from intake.deps import IntakeRuntime
from intake.settings import IntakeSettings

FILES = Path(__file__).resolve().parents[1] / "console"
PREFIX = "/console"


def service_urls(settings: IntakeSettings) -> dict[str, str]:
    """The four services' public origins from settings (console_<service>_url)."""
    return {
        "intake": settings.console_intake_url,
        "case": settings.console_case_url,
        "notification": settings.console_notification_url,
        "analytics": settings.console_analytics_url,
    }


def content_security(settings: IntakeSettings) -> dict[str, str]:
    return {PREFIX: page_policy(list(service_urls(settings).values()))}


router = APIRouter()


@router.get(f"{PREFIX}/config.json", include_in_schema=False)
async def console_config(rt: IntakeRuntime) -> JSONResponse:
    # Open like the page itself: it is read before sign-in and holds nothing secret.
    config: dict[str, object] = {"services": service_urls(rt.settings)}
    if rt.settings.console_mail_url:
        config["mail"] = rt.settings.console_mail_url  # a link only: the page never calls it
    return JSONResponse(config, headers={"Cache-Control": "no-store"})
