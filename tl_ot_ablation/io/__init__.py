"""Storage: atomic folder writes, manifests with checksums, the safetensors + JSON format and
the result cache.

Everything the package writes to disk goes through here; ``core`` stays math only. Imports
``core``; never ``lens``, ``eval``, the CLI or TransformerLens. One job per module:

- ``atomic``: a file or folder appears complete or not at all; ownership, locks, cache entries;
- ``manifest``: every file of a folder the package wrote, with its size and SHA-256;
- ``serialize``: fitted tensor objects saved and loaded (safetensors + ``config.json``);
- ``result_cache``: a verified, bounded on-disk cache of what a job computed, keyed by its
  inputs.
"""
