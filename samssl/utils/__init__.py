"""Small utilities every layer may use: atomic file writes and fingerprints, RNG state, config checks,
the record that keeps a run folder to one run.

Nothing here imports another ``samssl`` package (ARCHITECTURE.md).
"""

from samssl.utils.files import atomic_path, atomic_write_json, atomic_write_text, file_sha256, fingerprint

__all__ = ["atomic_path", "atomic_write_json", "atomic_write_text", "file_sha256", "fingerprint"]
