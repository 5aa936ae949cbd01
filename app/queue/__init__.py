"""The queue layer: input and output streams, request records, tenants, the service and worker registries, decisions.

Each Redis key family has one owner module here; :mod:`app.core.keys` only names the keys. Imports :mod:`app.core` only.
"""
