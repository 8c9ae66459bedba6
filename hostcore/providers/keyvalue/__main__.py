"""`python -m hostcore.providers.keyvalue`: run the provider; host data is read from stdin."""

import sys

from hostcore.providers.keyvalue.provider import KeyValueProvider
from hostcore.providers.protocol import run_provider

if __name__ == "__main__":
    sys.exit(run_provider(KeyValueProvider))
