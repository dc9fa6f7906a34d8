"""Manifest registry: immutable, content-fingerprinted dataset versions and their image store.

Importing this package is light (pyarrow and pandas only); the CLI lives in
flows/commands_manifest.py.
"""

from data_manifests.compare import ChangedPair, Diff, diff, diff_tables
from data_manifests.export import ExportResult, FlairExportOptions, export_flair_csv
from data_manifests.registry import (
    LoadedManifest,
    PublishedVersion,
    PublishError,
    RegistryError,
    default_registry_root,
    latest_version,
    list_datasets,
    list_versions,
    load_manifest,
    parse_ref,
    publish,
    resolve_ref,
)
from data_manifests.schema import ManifestMeta, content_fingerprint
from data_manifests.store import ImageStore, ImageStoreError, resolve_image_store, sha256_file
from data_manifests.verify import VerifyProblem, VerifyReport, verify

__all__ = [
    "ChangedPair",
    "Diff",
    "ExportResult",
    "FlairExportOptions",
    "ImageStore",
    "ImageStoreError",
    "LoadedManifest",
    "ManifestMeta",
    "PublishError",
    "PublishedVersion",
    "RegistryError",
    "VerifyProblem",
    "VerifyReport",
    "content_fingerprint",
    "default_registry_root",
    "diff",
    "diff_tables",
    "export_flair_csv",
    "latest_version",
    "list_datasets",
    "list_versions",
    "load_manifest",
    "parse_ref",
    "publish",
    "resolve_image_store",
    "resolve_ref",
    "sha256_file",
    "verify",
]
