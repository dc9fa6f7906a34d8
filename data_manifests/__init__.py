"""data_manifests."""
