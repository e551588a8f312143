"""All Redis access of the controller. Nothing outside this package imports redis or builds a key
(tests/unit/test_layering.py); features get a store object and call its typed methods.

- ``keys``: every key, one builder per family.
- ``errors``: ``StoreError`` / ``StoreUnavailable``, what every store method raises for a Redis error.
- ``redis_store.Store``: the facade (one per process): call records, tokens, stream tickets, audit,
  banner; its parts: ``refunds``, ``callbacks``, ``surveys`` (selfservice), ``outbound``, ``campaigns``,
  ``agents``, ``outcomes``, ``continuity``, ``reports``, ``webhooks``, ``leader`` (the lease and fenced
  writes), ``campaign_work`` (the campaign work stream of a cluster).
- ``tokens``: the one writer of the API token record; ``callrecord``: of call-record fields outside
  the record's Lua scripts; ``scripting``: Lua scripts in pipelines; ``sync``: blocking access for the
  development tools.
"""
