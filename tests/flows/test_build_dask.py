"""The build on Dask: a real `distributed.LocalCluster` of two worker processes builds the sample
atlas and publishes the same content as the thread runner; without an address the Dask runner
starts a cluster of its own. The per-PDF tasks write where they ran into their progress files,
so the tests see that the work left this process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each; yields (scheduler address, worker pids)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as local:
        with Client(local) as client:
            pids = set(client.run(os.getpid).values())
        yield local.scheduler_address, pids


def _build(pdfs: list[Path], root: Path, **flags):
    """Build with the CLI's flags (the same mapping `mmretinal build` uses); the result and the
    worker (host:pid) each PDF's task ran in."""
    from flows.build_flow import build_dataset
    from flows.commands_build import build_options

    options = build_options(
        dataset="mm-retinal", work_dir=root / "work", registry=root / "registry", **flags
    )
    progress_dir = root / "progress"
    result = build_dataset(pdfs=pdfs, options=options, publish=True, progress_dir=progress_dir)
    workers = {
        state["pdf"]: int(state["worker"].rsplit(":", 1)[1])
        for state in (json.loads(path.read_text()) for path in progress_dir.glob("*.json"))
    }
    return result, workers


@pytest.fixture(scope="module")
def thread_build(prefect_server, sample_atlas, tmp_path_factory: pytest.TempPathFactory):
    return _build(sample_atlas.pdfs, tmp_path_factory.mktemp("threads"), task_runner="threads")


@pytest.fixture(scope="module")
def dask_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dask")


def test_two_dask_workers_publish_the_same_content_as_threads(thread_build, cluster, sample_atlas, dask_root: Path) -> None:
    address, worker_pids = cluster
    threads, thread_workers = thread_build
    dask, dask_workers = _build(sample_atlas.pdfs, dask_root, task_runner="dask", dask_address=address)

    assert set(thread_workers.values()) == {os.getpid()}
    names = {pdf.name for pdf in sample_atlas.pdfs}
    assert set(dask_workers) == names and set(dask_workers.values()) <= worker_pids
    assert len(set(dask_workers.values())) == 2, dask_workers  # both workers took PDFs
    assert all(not doc.failed and not doc.cached and doc.pairs for doc in dask.record.documents)
    assert [doc.book for doc in dask.record.documents] == [doc.book for doc in threads.record.documents]
    assert dask.record.build_id == threads.record.build_id
    assert dask.published.n_pairs == threads.published.n_pairs > 0
    assert dask.published.fingerprint == threads.published.fingerprint
    # the workers read the inputs from the shared work directory, by content hash
    from foundation.files import sha256_file

    staged = {path.parent.name: path.name for path in (dask_root / "work" / "inputs").glob("*/*.pdf")}
    assert staged == {sha256_file(pdf): pdf.name for pdf in sample_atlas.pdfs}


def test_dask_without_an_address_starts_a_local_cluster(thread_build, cluster, sample_atlas, dask_root: Path) -> None:
    """On the work directory of the cluster build: every record is reused, read by tasks that ran
    in the processes of a cluster the runner started (not this one, not the module's cluster)."""
    threads, _ = thread_build
    local, workers = _build(sample_atlas.pdfs, dask_root, task_runner="dask", workers=2)
    assert set(workers) == {pdf.name for pdf in sample_atlas.pdfs}
    _, module_cluster_pids = cluster
    assert not set(workers.values()) & {os.getpid(), *module_cluster_pids}
    assert all(doc.cached for doc in local.record.documents)
    assert local.published.fingerprint == threads.published.fingerprint
