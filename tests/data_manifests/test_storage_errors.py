"""A full disk during publish: one error line (what, why, how many pairs), no version, and the
images it had stored are listed and removed by `mmretinal manifest gc` (never a version's)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from data_manifests.registry import list_versions

# publish under a file-size limit: small panel images fit, the manifest does not (EFBIG, as a full disk)
PUBLISH_UNDER_LIMIT = """
import json, resource, signal, sys
from pathlib import Path
from foundation.records import Pair
from data_manifests.registry import PublishError, publish
pairs = [Pair.model_validate(p) for p in json.loads(Path(sys.argv[1]).read_text())]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    publish(pairs, "mm-retinal", sys.argv[2], config={}, input_pdfs={}, pipeline_version="t")
except PublishError as exc:
    print(exc)
    sys.exit(3)
"""


def _publish_limited(pairs, registry_root: Path, tmp_path: Path, limit: int) -> subprocess.CompletedProcess:
    spec = tmp_path / "pairs.json"
    spec.write_text(json.dumps([p.model_dump(mode="json") for p in pairs]))
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-c", PUBLISH_UNDER_LIMIT, str(spec), str(registry_root), str(limit)],
                          capture_output=True, text=True, cwd=root, timeout=300)


def test_a_full_disk_is_one_line_and_gc_removes_what_the_failed_publish_stored(make_pair, do_publish, registry_root, tmp_path):
    do_publish([make_pair("book-a", "1-1", "A", seed=1)])
    pairs = [make_pair("book-b", f"2-{i}", None, seed=10 + i) for i in range(4)]

    done = _publish_limited(pairs, registry_root, tmp_path, limit=3000)

    assert done.returncode == 3, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    assert "cannot publish mm-retinal" in lines[0] and "File too large (EFBIG)" in lines[0]
    assert "4 pair(s) not published" in lines[0] and "4 image(s) it wrote to the store" in lines[0]
    assert list_versions(registry_root, "mm-retinal") == ["v1"]

    app = importlib.import_module("flows.cli").app
    runner = CliRunner()
    dry = runner.invoke(app, ["manifest", "gc", "--registry", str(registry_root), "--dry-run", "--min-age", "0"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.count("would remove ") == 4
    stored = sorted((registry_root / "images").glob("??/*.png"))
    assert len(stored) == 5
    removed = runner.invoke(app, ["manifest", "gc", "--registry", str(registry_root), "--min-age", "0"])
    assert removed.exit_code == 0 and removed.output.count("removed ") == 4
    assert len(sorted((registry_root / "images").glob("??/*.png"))) == 1
    verify = runner.invoke(app, ["manifest", "verify", "mm-retinal/v1", "--registry", str(registry_root)])
    assert verify.exit_code == 0, verify.output


def test_gc_keeps_young_unreferenced_images_by_default(make_pair, do_publish, registry_root):
    from data_manifests.gc import collect_garbage
    from data_manifests.store import ImageStore

    do_publish([make_pair("book-a", "1-1", "A", seed=1)])
    orphan = make_pair("book-z", "9-9", None, seed=99)
    ImageStore(registry_root / "images").put(orphan.image_file, orphan.image_sha256)
    report = collect_garbage(registry_root)
    assert report.unreferenced == [] and report.young == 1
    report = collect_garbage(registry_root, min_age_seconds=0, dry_run=True)
    assert len(report.unreferenced) == 1 and (report.store / report.unreferenced[0]).is_file()
