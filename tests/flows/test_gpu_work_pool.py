"""Training deployments on a work pool: registered against a real Prefect server, and a run of
pretrain/keepfit-ffa picked up and finished by a process worker this test starts (as a worker on a
GPU host would; here the tiny model trains on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.prefect_env import stop_process

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.timeout(600)]

POOL = "test-gpu"
RUN_SECONDS = 300


def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


@pytest.fixture(scope="module")
def training_data(tmp_path_factory):
    from keepfit.synthetic import publish_expert_manifest, write_flair_dataset

    root = tmp_path_factory.mktemp("gpu-pool-data")
    csv_path = write_flair_dataset(root / "flair", n_images=16, seed=0)
    registry, version = publish_expert_manifest(root / "mmretinal", n_pairs=4, seed=1, extra_ffa=4)
    return {"csv": csv_path, "registry": registry, "version": version, "root": root}


@pytest.fixture(scope="module")
def deployed(prefect_server):
    from flows.deployments import GpuPoolOptions, deploy_gpu_flows

    return deploy_gpu_flows(GpuPoolOptions(work_pool=POOL, job_variables={"env": {"MMRETINAL_TEST_WORKER": "1"}}))


def test_training_deployments_target_the_work_pool(deployed):
    from flows.deployments import GpuPoolOptions, deploy_gpu_flows

    assert set(deployed) == {
        "pretrain/keepfit", "pretrain/keepfit-ffa", "evaluate/keepfit",
        "ffa-report-train/keepfit-ffa", "ffa-report-evaluate/keepfit-ffa",
    }
    with _client() as client:
        pool = client.read_work_pool(POOL)
        assert pool.type == "process"
        for name, deployment_id in deployed.items():
            deployment = client.read_deployment(deployment_id)
            assert deployment.work_pool_name == POOL, name
            assert deployment.job_variables == {"env": {"MMRETINAL_TEST_WORKER": "1"}}
        ffa = client.read_deployment_by_name("pretrain/keepfit-ffa")
        assert ffa.parameters["config"] == "keepfit-ffa"
        assert ffa.global_concurrency_limit.limit == 1
    with pytest.raises(RuntimeError, match="exists with type 'process'"):
        deploy_gpu_flows(GpuPoolOptions(work_pool=POOL, pool_type="docker", image="mm-retinal:gpu"))


def test_a_process_worker_picks_up_and_finishes_a_pretraining_run(prefect_server, deployed, training_data, tmp_path):
    from prefect.deployments import run_deployment

    output_dir = tmp_path / "ffa-run"
    flow_run = run_deployment(
        "pretrain/keepfit-ffa",
        parameters={
            "config": "tiny",
            "manifest_version": training_data["version"],
            "overrides": [
                f"flair.dataframes=[{training_data['csv']}]",
                f"expert.registry_root={training_data['registry']}",
                f"output_dir={output_dir}",
                "max_steps=2", "batch_size=4", "checkpoint_every=2", "num_workers=0", "allow_random_init=true",
            ],
        },
        timeout=0,  # only schedule it: no worker is running yet
    )
    assert flow_run.state.is_scheduled()

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.api_url,
        "PREFECT_HOME": str(prefect_server.home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", POOL, "--type", "process",
             "--name", "gpu-host-1", "--limit", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + RUN_SECONDS
        with _client() as client:
            while True:
                current = client.read_flow_run(flow_run.id)
                if current.state.is_final() or time.monotonic() > deadline or worker.poll() is not None:
                    break
                time.sleep(1)
    finally:
        stop_process(worker, 30)
    worker_log = log_path.read_text(errors="replace")
    assert current.state.is_completed(), f"{current.state}\n{worker_log[-4000:]}"
    assert current.work_pool_name == POOL
    assert "gpu-host-1" in worker_log
    assert (output_dir / "checkpoints" / "step-0000002.pth").is_file()


def test_prefect_yaml_puts_the_same_training_deployments_on_the_gpu_pool():
    import yaml

    from flows.deployments import GPU_DEPLOYMENTS, GPU_WORK_POOL

    declared = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text(encoding="utf-8"))
    on_gpu = {(d["entrypoint"], d["name"]): d for d in declared["deployments"] if d["work_pool"]["name"] == GPU_WORK_POOL}
    assert set(on_gpu) == {(spec.entrypoint, spec.name) for spec in GPU_DEPLOYMENTS}
    for spec in GPU_DEPLOYMENTS:
        assert on_gpu[(spec.entrypoint, spec.name)].get("parameters", {}) == spec.parameters
