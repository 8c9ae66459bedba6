"""The bundled `wasmcloud:keyvalue` provider (Redis): `python -m hostcore.providers.keyvalue`."""

from hostcore.providers.keyvalue.provider import DEFAULT_URL, OPERATIONS, KeyValueProvider

__all__ = ["DEFAULT_URL", "KeyValueProvider", "OPERATIONS"]
