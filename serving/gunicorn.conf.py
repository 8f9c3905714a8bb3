"""gunicorn settings for the prediction service, from the environment.

    gunicorn -c serving/gunicorn.conf.py serving.wsgi:app

HOST (127.0.0.1) and PORT (8000) give the bind address; GUNICORN_WORKERS (2) processes of
GUNICORN_THREADS (4) threads each; GUNICORN_TIMEOUT (30 s) before a stuck worker is killed,
GUNICORN_GRACEFUL_TIMEOUT (20 s) to finish in-flight requests on SIGTERM, GUNICORN_KEEPALIVE
(5 s); LOG_LEVEL (info); ACCESS_LOG ("-": JSON lines on stdout; empty: off). The app's own
settings (MODEL_DIR...) are in serving/settings.py. Metrics of all workers are summed through
PROMETHEUS_MULTIPROC_DIR: a temporary directory when it is unset, emptied at start when set.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Threads: an idle keep-alive connection or a slow client does not block the worker.
# Measured against it under bench/serve's wrk load (same runs, 1-row bodies, 2026-12-02;
# python -m bench.serve.profile gives the per-stage shares): gunicorn's C parser
# (gunicorn_h1c, http_parser = "fast") 1.10x the throughput at 0.92x the CPU per request,
# but it ships as source only and the images install binary wheels only; 8 threads per
# worker 0.97-1.02x, 2 threads 0.83-0.99x; serving kept-alive requests on the poller thread
# (no pool handoff) 1.00-1.07x at 0.91-0.95x the CPU, not taken: a slow reader or a model
# reload from an object store would then stall every connection of the worker. gevent
# workers (2026-12-04, same bench, 3 rounds, right after gthread's): 1.15x the throughput at 1 row,
# 1.04x at 100, 0.84-0.94x the CPU per request, but p99 130-207 ms against 11-16 ms: a
# greenlet keeps serving its keep-alive connection while the others wait.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Each worker listens on its own SO_REUSEPORT socket, and the kernel spreads new connections
# over them. On one shared socket the workers race to accept, and one often takes nearly all
# of a few clients' keep-alive connections and keeps them: measured under make bench-serve,
# 14 to 16 of wrk's 16 in about 4 rounds of 10, which then ran at one worker's speed.
reuse_port = True
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# No runtime control socket: it would live under $HOME, which the container does not have,
# and two servers on one machine would share it. Kubernetes or the shell manage the process.
control_socket_disable = True

loglevel = os.environ.get("LOG_LEVEL", "info").lower()
errorlog = "-"
# ACCESS_LOG: where the JSON access log goes ("-": stdout); empty turns it off.
accesslog = os.environ.get("ACCESS_LOG", "-") or None
logger_class = "serving.gunicorn_logging.JsonLogger"
# The heartbeat file goes to memory: no disk writes, and /tmp may be read-only or small.
# gunicorn creates it with mkstemp (unique name, mode 0600), so the shared directory is safe.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # nosec B108

_created_metrics_dirs: list[str] = []


def on_starting(server):
    """Prepare PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="linreg-serving-metrics-")
        _created_metrics_dirs.append(directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    # Files left by an earlier run would be counted again.
    for stale in path.glob("*.db"):
        stale.unlink()
    server.log.info("prometheus multiprocess directory: %s", directory)


def child_exit(server, worker):
    """Drop the live gauges (model version) of a worker that exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Write out the requests a stopping worker counted since its last metrics flush."""
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", {})
    if "serving" in extensions:
        extensions["serving"].metrics.flush()


def on_exit(server):
    for directory in _created_metrics_dirs:
        shutil.rmtree(directory, ignore_errors=True)
