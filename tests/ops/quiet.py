"""Reading the services' /metrics in tests: sums of a metric, and waiting until the stack is quiet."""

import asyncio

import httpx
from crmtools.devstack import Stack


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_quiet(stack: Stack, client: httpx.AsyncClient, timeout_s: float = 30) -> None:
    """No consumer lag and no outbox backlog anywhere."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        busy = {}
        for name, svc in stack.services.items():
            text = (await client.get(f"{svc.url}/metrics")).text
            pending = metric_sum(text, "crm_consumer_lag") + metric_sum(text, "crm_outbox_backlog")
            if pending:
                busy[name] = pending
        if not busy:
            return
        assert loop.time() < deadline, f"the stack does not settle: {busy}"
        await asyncio.sleep(0.2)
