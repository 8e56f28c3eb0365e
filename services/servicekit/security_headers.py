"""Security headers on every response: no framing, no MIME sniffing, no referrer, and a
Content-Security-Policy per path prefix (the console's own; none of the API's JSON may run)."""

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# JSON and event streams: nothing in them is to be run, styled or framed.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_PREFIXES = ("/docs", "/redoc")


def docs_policy(script_hashes: list[str]) -> str:
    """The interactive docs' policy (servicekit.apidocs): scripts, styles and images from this
    service only, plus the page's inline starter script by its hash. Styles may be inline (ReDoc
    styles itself with <style> elements it makes) and ReDoc's search runs in a blob: worker."""
    scripts = " ".join(["'self'", *script_hashes])
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'; object-src 'none'"
    )


# The docs' assets, and the fallback of their pages (which send their own, with their script's hash).
DOCS_POLICY = docs_policy([])

_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def page_policy(connect_origins: list[str]) -> str:
    """The policy of a page of ours: its own scripts and styles only, calls to these origins."""
    connect = " ".join(["'self'", *dict.fromkeys(connect_origins)])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )


class SecurityHeaders:
    """Pure ASGI middleware (streams pass through untouched). `policies`: path prefix -> policy,
    the longest matching prefix wins; other paths get API_POLICY."""

    def __init__(self, app: ASGIApp, policies: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.policies = sorted(
            {**dict.fromkeys(DOCS_PREFIXES, DOCS_POLICY), **(policies or {})}.items(),
            key=lambda kv: -len(kv[0]),
        )

    def policy_for(self, path: str) -> str:
        for prefix, policy in self.policies:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return policy
        return API_POLICY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*_ALWAYS, (b"content-security-policy", self.policy_for(scope["path"]).encode())]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
