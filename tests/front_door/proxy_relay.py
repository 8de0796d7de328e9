"""A tiny TCP relay standing in for a load balancer in TCP mode with ``send-proxy``: it
accepts on 127.0.0.1 (port 0), connects to the bastion, writes a PROXY header naming a
client address of the test's choosing, then copies bytes both ways. Test-only.

    python proxy_relay.py --to PORT --header v1|v2|v2-local|none [--client ADDR:PORT]
                          [--bind ADDR]

Prints ``listening on PORT`` once ready; stopped by PID (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(client: tuple[str, int], server: tuple[str, int]) -> bytes:
    family = "TCP4" if ipaddress.ip_address(client[0]).version == 4 else "TCP6"
    return f"PROXY {family} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


def v2_header(
    client: tuple[str, int] | None, server: tuple[str, int] | None, tlvs: bytes = b""
) -> bytes:
    """A v2 PROXY header, or LOCAL (a health check) when ``client`` is None."""
    if client is None or server is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + len(tlvs).to_bytes(2, "big") + tlvs
    source, destination = ipaddress.ip_address(client[0]), ipaddress.ip_address(server[0])
    family = 0x11 if source.version == 4 else 0x21
    body = (
        source.packed
        + destination.packed
        + client[1].to_bytes(2, "big")
        + server[1].to_bytes(2, "big")
        + tlvs
    )
    return V2_SIGNATURE + bytes([0x21, family]) + len(body).to_bytes(2, "big") + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    host, _, port = args.client.rpartition(":")
    client = (host.strip("[]"), int(port))

    async def relay(down_reader: asyncio.StreamReader, down_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", args.to, local_addr=(args.bind, 0)
        )
        server = ("127.0.0.1", args.to)
        header = {
            "v1": lambda: v1_header(client, server),
            "v2": lambda: v2_header(client, server, tlvs=b"\x04\x00\x03abc"),  # a NOOP TLV
            "v2-local": lambda: v2_header(None, None),
            "none": lambda: b"",
        }[args.header]()
        up_writer.write(header)
        await asyncio.gather(_pipe(down_reader, up_writer), _pipe(up_reader, down_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", type=int, required=True)
    parser.add_argument("--header", choices=["v1", "v2", "v2-local", "none"], required=True)
    parser.add_argument("--client", default="203.0.113.7:40000")
    parser.add_argument("--bind", default="127.0.0.1")
    asyncio.run(_serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
