"""hostcore: a wasmCloud OTP-era compatible WebAssembly actor host on a Thespian supervision tree."""

__version__ = "0.1.0"
# The host_core version we are wire-compatible with (protocol.md §0.1); reported in ping replies.
COMPAT_VERSION = "0.59.0"

__all__ = ["__version__", "COMPAT_VERSION"]
