"""A faithful in-process simulator of the Zilliz Cloud v2 import-job REST API (and of Milvus).

Nobody working on jobsync can reach the real API, so this package is what the client is tested
against. It follows the APIs as their public documentation and the official SDKs describe them
(what jobsync relies on is in docs/how-a-pass-works.md): the list and progress endpoints, the
HTTP-200 error envelopes and their codes, offset paging with a total `count`, string job ids,
the job state machine and retention. Where it chooses or differs, the module that does it says so
(`world`, `zilliz`, `milvus`, `server`). It imports only the standard library, so it also runs as
a standalone server:

    sim = Simulator(cluster_ids=["in01-0123456789abcdef"], jobs=1000, api_key="test-key")
    print(sim.start("127.0.0.1", 19531))
    sim.run_progression(interval=2.0)
    ...  # Ctrl-C
    sim.stop()

Tests drive it explicitly: `advance()`, `set_state()`, `add_jobs()`, `remove_jobs()`, an injected
`clock`, and `Fault`s that break chosen requests.
"""

from .faults import Fault, Quirks
from .model import RequestRecord, SimJob, StateChange
from .simulator import DEFAULT_CLUSTER_ID, Simulator
from .wire import DESCRIBE_PATH, GET_PROGRESS_PATH, LIST_PATH, PROGRESS_PATH, Reply

__all__ = [
    "DEFAULT_CLUSTER_ID",
    "DESCRIBE_PATH",
    "GET_PROGRESS_PATH",
    "LIST_PATH",
    "PROGRESS_PATH",
    "Fault",
    "Quirks",
    "Reply",
    "RequestRecord",
    "SimJob",
    "Simulator",
    "StateChange",
]
