"""The console's configuration (intake.console) and its page, which must run under its CSP."""

import re
from html.parser import HTMLParser

import pytest
from intake.console import FILES, content_security, service_urls
from intake.settings import IntakeSettings
from pydantic import ValidationError
from servicekit.inputs import origin


def settings(**env: str) -> IntakeSettings:
    return IntakeSettings(master_key="x", **env)  # type: ignore[arg-type]


def test_the_console_calls_the_configured_origins() -> None:
    s = settings(console_case_url="https://case.example.com/", console_intake_url="https://crm.example.com:8443")
    assert service_urls(s) == {
        "intake": "https://crm.example.com:8443",
        "case": "https://case.example.com",
        "notification": "http://127.0.0.1:8003",
        "analytics": "http://127.0.0.1:8004",
    }
    policy = content_security(s)["/console"]
    assert "connect-src 'self' https://crm.example.com:8443 https://case.example.com http://127.0.0.1:8003" in policy


@pytest.mark.parametrize(
    "bad",
    ["javascript:alert(1)", "http://", "ftp://case", "http://case/v1", "http://case?x=1", "http://u:p@case", "case"],
)
def test_only_http_origins_are_settings(bad: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        origin(bad)
    with pytest.raises(ValidationError):
        settings(console_case_url=bad)


class Inline(HTMLParser):
    """What a CSP without 'unsafe-inline' would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.found += [f"{tag} {name}=" for name in names if name.startswith("on") or name == "style"]
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        if any(str(v).strip().lower().startswith("javascript:") for v in names.values()):
            self.found.append(f"{tag} javascript: URL")


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    parser = Inline()
    parser.feed((FILES / "index.html").read_text())
    assert parser.found == []
    scripts = sorted(FILES.glob("*.js"))
    # a new script is checked as well
    assert [p.name for p in scripts] == ["app.js", "labels.js", "merging.js", "records.js", "reports.js"]
    unsafe = re.compile(r"\beval\(|new Function\(|\.innerHTML\b|setAttribute\(\"style|location\.search")
    for path in scripts:
        found = unsafe.search(path.read_text())
        assert found is None, (path.name, found)
