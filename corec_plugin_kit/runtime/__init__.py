"""The Redis Streams runtime: ``corec-kit run`` (the worker) and ``corec-kit send``.

Modules: ``worker`` (the stream loop), ``service`` (wiring for ``corec-kit run``: Redis, the
record store, metrics and the worker), ``breaker`` (per-processor circuit breaker),
``embedded`` (the embedded Valkey server), ``connection`` (Redis clients), ``consumers`` (list
the group's consumers, prune dead ones), ``metrics`` (Prometheus), ``ops`` (send, stats,
dead-letter and consumer operations), ``cli`` (the click commands), ``testing`` (pytest
fixtures). Importing this package imports nothing heavy.
"""
