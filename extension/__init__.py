"""A stand-in for the VMSnapshotLinux extension handler: driven like a WALA handler, runs off Azure too.

See ``extension/README.md``. The driving surface is :func:`write_extension_root`, :func:`enable`,
:func:`run_daemon` and ``python -m extension``.
"""
from extension.enable import EnableResult, enable
from extension.layout import write_extension_root

__all__ = ["EnableResult", "enable", "run_daemon", "run_foreground", "write_extension_root"]


def __getattr__(name: str) -> object:
    # The daemon's side loads on first use: ``python -m extension enable``, which the guest agent
    # waits for on every command, never needs it.
    if name in ("run_daemon", "run_foreground"):
        from extension import handler

        return getattr(handler, name)
    raise AttributeError(f"module 'extension' has no attribute {name!r}")
