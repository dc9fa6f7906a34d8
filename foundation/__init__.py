"""Ground floor shared by every layer: typed records, content hashes and atomic file output."""
