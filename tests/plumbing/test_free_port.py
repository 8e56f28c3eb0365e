"""processes.free_port: never the same port twice in one process, though each is free when picked."""

import socket

from crmtools.processes import free_port


def test_ports_are_free_and_never_handed_out_twice() -> None:
    # 1,500 picks from the 12,000 ports of the range: without the memory of what was handed out,
    # the same port would come back ~90 times (none is bound in between, as in a Stack).
    ports = [free_port() for _ in range(1500)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= p <= 32_000 for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out
