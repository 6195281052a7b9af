"""The Prefect flows: one file per flow, named after it, a few lines each over the plain
functions of ``flows/``. The only package of the project that imports Prefect at module level.

| flow                 | file                     | deployments                           |
|----------------------|--------------------------|---------------------------------------|
| pretrain             | pretrain.py              | pretrain/full, pretrain/image-only    |
| sft                  | sft.py                   | sft/full                              |
| preprocess           | preprocess.py            | preprocess/full                       |
| evaluate             | evaluate.py              | evaluate/full                         |
| compare              | compare.py               | compare/vlm-vs-jepa                   |
| ablate               | ablate.py                | ablate/<sweep>, one per sweep         |
| selective-decoding   | selective_decoding.py    | selective-decoding/sweep, /benchmark  |

``deploy.py`` registers them all (``python -m flows.prefect_flows.deploy``, or ``vljepa deploy``).
"""

from __future__ import annotations

import asyncio
import os

from prefect._internal.concurrency import services as _services


def _drained_after_fork() -> None:
    """Mark Prefect's queue services drained in a forked child (a DataLoader worker of a flow).

    Prefect 3.8 resets its services after ``fork()`` but keeps the drain each one registered to run at
    thread exit, and that drain asserts on the event the reset cleared: a worker that finished its
    shard cleanly exits 1, and torch raises "DataLoader worker exited unexpectedly" in the training
    loop of the flow. The child sends nothing to the API, so there is nothing to drain; a set event
    makes the drain return.
    """
    for service in list(_services._active_services):
        if service._done_event is None:
            done = asyncio.Event()
            done.set()
            service._done_event = done


os.register_at_fork(after_in_child=_drained_after_fork)  # after Prefect's own reset, which is registered first
