"""`publish-manifest` against a real Prefect server attaches the dataset report of the version it published."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.timeout(600)]


def test_publish_flow_attaches_the_dataset_report(prefect_server, review_build, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    import shutil

    from curation.build import BuildOptions, record_build
    from flows.build_flow import publish_manifest
    from foundation.documents import write_document_run
    from foundation.records import DocumentRun

    options = BuildOptions(dataset="mm-retinal-report", work_dir=tmp_path / "work", registry_root=tmp_path / "registry",
                           translation_home=tmp_path / "argos")
    staging = tmp_path / "staging"
    (staging / "images").mkdir(parents=True)
    for pair in review_build.pairs:
        shutil.copy(review_build.image_dir / pair.image_file, staging / "images")
    pairs = [pair.model_copy(update={"review_status": "auto_accepted"}) for pair in review_build.pairs]
    document = DocumentRun(pdf=str(review_build.pdf_path), book="atlas-a", pairs=pairs)
    write_document_run(document, staging, options.documents_dir / "atlas-a")
    record = record_build([document], options)

    state = publish_manifest(build_id=record.build_id, options=options, return_state=True)
    assert state.result().n_pairs == len(pairs)
    page = tmp_path / "work" / "reports" / "mm-retinal-report-v1-report.html"
    assert page.is_file() and 'class="thumb"' in page.read_text(encoding="utf-8")

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    by_key = {artifact.key: artifact for artifact in artifacts}
    report = by_key["mm-retinal-report-dataset-report"]
    assert report.type == "markdown"
    assert "Dataset report `mm-retinal-report/v1`" in report.data
    assert report.data.count("data:image/png;base64,") == 6
    assert page.as_uri() in by_key["mm-retinal-report-dataset-report-page"].data
