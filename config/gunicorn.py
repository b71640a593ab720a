"""gunicorn settings for ``make serve`` (``gunicorn -c config/gunicorn.py config.wsgi``).

With several workers, /health/metrics adds up every worker's counters through prometheus_client's
multi-process mode (``PROMETHEUS_MULTIPROC_DIR``, an empty directory at each start; ``make serve``
makes one). A worker that exits is forgotten here, so its gauges leave the sums.
"""

import os


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
