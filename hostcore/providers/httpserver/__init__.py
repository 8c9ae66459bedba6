"""The bundled `wasmcloud:httpserver` provider: `python -m hostcore.providers.httpserver`."""

from hostcore.providers.httpserver.messages import HANDLE_REQUEST, HttpRequest, HttpResponse
from hostcore.providers.httpserver.provider import HttpServerProvider
from hostcore.providers.httpserver.settings import ServiceSettings, load_settings

__all__ = ["HANDLE_REQUEST", "HttpRequest", "HttpResponse", "HttpServerProvider", "ServiceSettings", "load_settings"]
