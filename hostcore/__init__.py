"""hostcore: a wasmCloud OTP-era compatible WebAssembly actor host on a Thespian supervision tree."""

__version__ = "0.1.0"
# The host_core version whose wire we speak (protocol.md Corrections: the final OTP line,
# v0.60-v0.63); reported in ping replies and heartbeats. wadm 0.4-0.6 needs valid semver >= 0.63.0.
COMPAT_VERSION = "0.63.2"

__all__ = ["__version__", "COMPAT_VERSION"]
