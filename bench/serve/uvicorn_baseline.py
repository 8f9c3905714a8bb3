"""Run the FastAPI baseline on uvicorn with N worker processes, as ``uvicorn --workers N`` does.

One difference: ``uvicorn --workers N`` binds its listening socket with ``proto`` 0, so
asyncio never sets TCP_NODELAY on the accepted connections and every keep-alive request
after the first waits ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149, open). That
would make the baseline look ~100x slower than it is; this binds the socket with
``IPPROTO_TCP``, as the proposed fix does, and runs uvicorn's own multiprocess supervisor.

    python -m bench.serve.uvicorn_baseline --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

APP = "bench.serve.fastapi_app:app"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        APP,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.set_inheritable(True)
    Multiprocess(config, sockets=[listener]).run()


if __name__ == "__main__":
    main()
