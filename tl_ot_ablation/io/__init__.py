"""Storage: atomic folder writes, manifests with checksums, and the safetensors + JSON format.

Everything the package writes to disk goes through here; ``core`` stays math only."""
