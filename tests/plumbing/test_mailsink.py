"""The dev stack's mail sink: what notification's own SMTP sender sends is listed on its page and
as JSON, newest first, with recipient, subject, body and time, and markup in a message is text."""

import asyncio

import httpx
from crmtools.mailsink import Mailbox, mail_sink
from notification.delivery import Message, SmtpConfig, SmtpSender


def message(n: int, address: str, body: str) -> Message:
    return Message(
        notification_id=f"id-{n}",
        rule="agent_reply",
        customer_id="cust-1",
        channel="email",
        address=address,
        language="en",
        subject=f"Re: your case C-{n}",
        body=body,
        source_event_id=f"ev-{n}",
    )


def test_the_page_lists_what_notification_sent_newest_first() -> None:
    with mail_sink(0, 0) as sink:
        sender = SmtpSender(SmtpConfig(host="127.0.0.1", port=sink.smtp_port))

        async def send() -> None:
            await sender.send(message(1, "ada@example.com", "A technician comes on Monday."))
            await sender.send(message(2, "bob@example.com", "<script>alert(1)</script> Grüße"))

        asyncio.run(send())
        listed = httpx.get(sink.url + "messages.json").json()
        assert [(m["recipients"], m["subject"]) for m in listed] == [
            (["bob@example.com"], "Re: your case C-2"),
            (["ada@example.com"], "Re: your case C-1"),
        ]
        assert listed[1]["body"].strip() == "A technician comes on Monday."
        assert listed[0]["headers"]["X-CRM-Rule"] == "agent_reply"
        assert listed[0]["received_at"] >= listed[1]["received_at"]
        page = httpx.get(sink.url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text.index("bob@example.com") < page.text.index("ada@example.com")
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Grüße" in page.text and "<script>" not in page.text
        missing = httpx.get(sink.url + "nothing")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_an_empty_sink_says_so_and_keeps_only_the_newest() -> None:
    with mail_sink(0, 0) as sink:
        assert 'id="empty"' in httpx.get(sink.url).text
        assert httpx.get(sink.url + "messages.json").json() == []
    box = Mailbox(limit=2)

    class Envelope:
        def __init__(self, n: int) -> None:
            self.content = f"Subject: s{n}\r\nTo: a@example.com\r\n\r\nbody {n}\r\n".encode()
            self.rcpt_tos = ["a@example.com"]
            self.mail_from = "crm@example.com"

    for n in range(3):
        asyncio.run(box.handle_DATA(None, None, Envelope(n)))
    assert [m.subject for m in box.newest_first()] == ["s2", "s1"]
