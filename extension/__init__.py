"""A stand-in for the VMSnapshotLinux extension handler: driven like a WALA handler, runs off Azure too.

See ``extension/README.md``. The driving surface is :func:`write_extension_root`, :func:`enable`,
:func:`run_daemon` and ``python -m extension``.
"""
from extension.handler import EnableResult, enable, run_daemon, run_foreground
from extension.layout import write_extension_root

__all__ = ["EnableResult", "enable", "run_daemon", "run_foreground", "write_extension_root"]
