"""Exports of a published version in the formats ML tools read directly.

`hf` (Hugging Face `datasets` on disk + parquet + dataset card), `webdataset` (tar shards) and
`croissant` (ML Commons JSON-LD). Each module imports its third-party library only when called,
so `import data_manifests` stays light. The KeepFIT/FLAIR CSV export lives in data_manifests/export.py;
one module per format: export_hf.py, export_webdataset.py, export_croissant.py (shared parts in export_common.py).
"""

from data_manifests.export_common import ExportError, ExportSummary
from data_manifests.export_croissant import CroissantExportOptions, export_croissant
from data_manifests.export_hf import HfExportOptions, export_hf
from data_manifests.export_webdataset import WebDatasetExportOptions, export_webdataset

__all__ = [
    "CroissantExportOptions",
    "ExportError",
    "ExportSummary",
    "HfExportOptions",
    "WebDatasetExportOptions",
    "export_croissant",
    "export_hf",
    "export_webdataset",
]
