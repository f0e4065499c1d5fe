"""ringshm.bridge: rings across machines, through NATS JetStream.

``run_out(ring, url, subject)`` publishes a ring's messages to a JetStream
stream, consuming each only once the stream stored it; ``run_in(url,
subject, ring)`` puts the stream's messages into a ring, acknowledging each
only once the put returned.  Each message arrives once and in order, across
SIGKILLs of either bridge and restarts of the server (docs/DESIGN.md,
"Bridges over NATS JetStream").  ``bridge_out``/``bridge_in`` are the same
as coroutines.  Needs the ``bridge`` extra (nats-py).
"""

from ringshm.bridge.connection import BridgeError, NatsOptions
from ringshm.bridge.in_ import bridge_in, run_in
from ringshm.bridge.out import bridge_out, run_out

__all__ = ["BridgeError", "NatsOptions", "bridge_in", "bridge_out", "run_in", "run_out"]
