"""The trainer as a separate process: a real SIGTERM, and a 2-process torchrun (gloo) run."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from keepfit.checkpoint import read_sidecar
from keepfit.trainer import Trainer, load_pretrain_config

pytestmark = pytest.mark.slow


def _write_config(path, overrides: dict) -> None:
    config = load_pretrain_config("tiny", overrides)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_sigterm_checkpoints_at_a_step_boundary_and_resume_matches_an_uninterrupted_run(
    tiny_pretrain_overrides, tmp_path
):
    overrides = {**tiny_pretrain_overrides, "max_steps": 400, "checkpoint_every": 1000, "output_dir": str(tmp_path / "killed")}
    config_path = tmp_path / "pretrain.yaml"
    _write_config(config_path, overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "keepfit.trainer", str(config_path)],
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "step 3/400" in line:
            process.send_signal(signal.SIGTERM)
            break
    remaining, _ = process.communicate(timeout=120)
    assert process.returncode == 3, "".join(seen)
    latest = json.loads((tmp_path / "killed" / "checkpoints" / "latest.json").read_text())
    stopped_at = latest["step"]
    assert 3 <= stopped_at < 400

    target = stopped_at + 2
    resumed = Trainer(load_pretrain_config("tiny", {**overrides, "stop_after_steps": target})).fit()
    straight = Trainer(
        load_pretrain_config(
            "tiny", {**overrides, "stop_after_steps": target, "output_dir": str(tmp_path / "straight")}
        )
    ).fit()
    assert resumed.step == straight.step == target
    a = torch.load(resumed.checkpoint, weights_only=True)
    b = torch.load(straight.checkpoint, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_process_gloo_run_completes_and_records_world_size(tiny_pretrain_overrides, tmp_path, free_port):
    config_path = tmp_path / "pretrain.yaml"
    _write_config(config_path, {**tiny_pretrain_overrides, "max_steps": 2, "batch_size": 4})
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
         "-m", "keepfit.trainer", str(config_path)],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000002.pth"
    sidecar = read_sidecar(checkpoint)
    assert sidecar["world_size"] == 2 and sidecar["step"] == 2
    state = torch.load(checkpoint.with_name("step-0000002.state.pt"), weights_only=True)
    assert len(state["rng"]) == 2 and not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
