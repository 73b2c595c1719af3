"""The Redis Streams runtime: ``corec-kit run`` (the worker) and ``corec-kit send``.

Modules: ``worker`` (the stream loop), ``breaker`` (per-processor circuit breaker),
``embedded`` (the embedded Valkey server), ``connection`` (Redis clients), ``metrics``
(Prometheus), ``ops`` (stats and dead-letter operations), ``cli`` (the click commands),
``testing`` (pytest fixtures). Importing this package imports nothing heavy.
"""
