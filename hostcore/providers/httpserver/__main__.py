"""`python -m hostcore.providers.httpserver`: run the provider; host data is read from stdin."""

import sys

from hostcore.providers.httpserver.provider import HttpServerProvider
from hostcore.providers.protocol import run_provider

if __name__ == "__main__":
    sys.exit(run_provider(HttpServerProvider))
