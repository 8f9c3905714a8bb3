"""Run the FastAPI baseline on uvicorn with N worker processes, as ``uvicorn --workers N`` does,
with two differences that both make the baseline faster and steadier, never slower:

- ``uvicorn --workers N`` binds its listening socket with ``proto`` 0, so asyncio never sets
  TCP_NODELAY on the accepted connections and every keep-alive request after the first waits
  ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149, open). The sockets here are bound
  with ``IPPROTO_TCP``, as the proposed fix does.
- Each worker binds its own SO_REUSEPORT socket, so the kernel spreads connections evenly
  over the workers, as gunicorn's ``reuse_port`` does for the service. With one shared socket
  the workers race to accept, and one of them often wins 14 to 16 of wrk's 16 keep-alive
  connections for the whole round: that round then measures one worker, not N.

    python -m bench.serve.uvicorn_baseline --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import socket
from types import FrameType

import uvicorn

APP = "bench.serve.fastapi_app:app"


def serve(host: str, port: int) -> None:
    """One worker: its own listening socket in the port's SO_REUSEPORT group."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    config = uvicorn.Config(APP, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=serve, args=(args.host, args.port)) for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn finishes in-flight requests

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
