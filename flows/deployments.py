"""Serve the project's flows as Prefect deployments: `python -m flows.deployments` or `mmretinal serve-flows`.

Deployments: `build-dataset/mm-retinal`, `publish-manifest/mm-retinal` and, when their modules
are importable, `pretrain/keepfit` (one run at a time; an event trigger on
`mmretinal.manifest.published` that passes the new dataset and version, shipped disabled) and
`evaluate/keepfit`, and the angiography half: `pretrain/keepfit-ffa` (the pretrain flow with the
`keepfit-ffa` config), `ffa-report-train/keepfit-ffa` and `ffa-report-evaluate/keepfit-ffa`.
Runs of a served deployment execute in this process's machine.

GPU work goes to a work pool instead (`deploy_gpu_flows`, `mmretinal deploy-gpu-flows`):
`pretrain/keepfit`, `pretrain/keepfit-ffa` and `evaluate/keepfit` are registered on the pool
`mmretinal-gpu` (process type by default, Docker as an option) and run wherever a worker of that
pool runs, e.g. `prefect worker start --pool mmretinal-gpu` on the GPU host (docs/scale.md).
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.apply_defaults()

import argparse  # noqa: E402 - Prefect reads its settings from the environment on import
import importlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Literal  # noqa: E402

from prefect import serve  # noqa: E402
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from flows.build_flow import PUBLISHED_EVENT, build_dataset, publish_manifest  # noqa: E402

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "mm-retinal"
TRAINING_DEPLOYMENT_NAME = "keepfit"
FFA_DEPLOYMENT_NAME = "keepfit-ffa"
PRETRAIN_ON_PUBLISH_ENV = "MMRETINAL_PRETRAIN_ON_PUBLISH"


class ServeOptions(BaseModel):
    """What `serve-flows` serves and how."""

    pretrain_on_publish: bool = Field(
        False, description="Enable the trigger that starts pretraining when a manifest version is published."
    )
    include_training: bool = Field(True, description="Also serve the pretrain and evaluate flows when importable.")
    limit: int | None = Field(None, description="Most flow runs this process executes at once (None: no limit).")


def pretrain_on_publish_from_env() -> bool:
    return os.environ.get(PRETRAIN_ON_PUBLISH_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def published_trigger(enabled: bool) -> DeploymentEventTrigger:
    """Run pretraining on the version a publish just announced (dataset and version from the event)."""
    return DeploymentEventTrigger(
        name="pretrain-on-published-manifest",
        description=f"Pretrain KeepFIT on each new version announced by {PUBLISHED_EVENT}.",
        enabled=enabled,
        expect={PUBLISHED_EVENT},
        match={"prefect.resource.id": "mmretinal.dataset.*"},
        parameters={
            "dataset": "{{ event.payload.dataset }}",
            "manifest_version": "{{ event.payload.version }}",
        },
    )


def _optional_flow(module: str, attribute: str) -> Any | None:
    """A flow from a module that needs the training stack; None (and a log line) when unavailable."""
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        logger.warning("not serving %s.%s: %s", module, attribute, exc)
        return None


def build_deployments(options: ServeOptions) -> list[Any]:
    """The RunnerDeployments to serve."""
    deployments = [
        build_dataset.to_deployment(
            name=DEPLOYMENT_NAME,
            description="Steps 1-3 per PDF in parallel, the review queue, and publishing.",
            tags=["mm-retinal", "build"],
        ),
        publish_manifest.to_deployment(
            name=DEPLOYMENT_NAME,
            description="Apply review decisions to a build and publish the next manifest version.",
            tags=["mm-retinal", "publish"],
        ),
    ]
    if not options.include_training:
        return deployments
    pretrain = _optional_flow("flows.pretrain", "pretrain_flow")
    if pretrain is not None:
        deployments.append(
            pretrain.to_deployment(
                name=TRAINING_DEPLOYMENT_NAME,
                description="KeepFIT pretraining; one run at a time.",
                concurrency_limit=1,
                triggers=[published_trigger(options.pretrain_on_publish)],
                tags=["keepfit", "pretrain"],
            )
        )
    evaluate = _optional_flow("flows.evaluate", "evaluate")
    if evaluate is not None:
        deployments.append(
            evaluate.to_deployment(
                name=TRAINING_DEPLOYMENT_NAME,
                description="Evaluate checkpoints and publish report artifacts.",
                concurrency_limit=1,
                tags=["keepfit", "evaluate"],
            )
        )
    deployments.extend(ffa_deployments(pretrain))
    return deployments


FFA_REPORT_FLOWS = (
    ("ffa_report_train_flow", "Train the FFA report generator, select on validation, score test once."),
    ("ffa_report_evaluate_flow", "Score a report generator on an FFA-IR split and publish report artifacts."),
)


def ffa_deployments(pretrain: Any | None) -> list[Any]:
    """KeepFIT-FFA pretraining and FFA report generation (training, evaluation)."""
    deployments = []
    if pretrain is not None:
        deployments.append(
            pretrain.to_deployment(
                name=FFA_DEPLOYMENT_NAME,
                description="KeepFIT-FFA pretraining (FFA-IR + MM-Retinal FFA pairs); one run at a time.",
                parameters={"config": "keepfit-ffa"},
                concurrency_limit=1,
                tags=["keepfit", "ffa", "pretrain"],
            )
        )
    for flow_name, description in FFA_REPORT_FLOWS:
        report_flow = _optional_flow("flows.ffa", flow_name)
        if report_flow is not None:
            deployments.append(
                report_flow.to_deployment(
                    name=FFA_DEPLOYMENT_NAME, description=description, concurrency_limit=1, tags=["keepfit", "ffa", "report"]
                )
            )
    return deployments


def serve_flows(options: ServeOptions) -> None:
    """Register the deployments with the server in $PREFECT_API_URL and run their flow runs until stopped."""
    if prefect_env.api_url() is None:
        raise RuntimeError(
            "PREFECT_API_URL is not set: start a server (`prefect server start`) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api before serving deployments"
        )
    deployments = build_deployments(options)
    logger.info("serving %s", ", ".join(f"{d.flow_name}/{d.name}" for d in deployments))
    serve(*deployments, limit=options.limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pretrain-on-publish",
        action="store_true",
        default=pretrain_on_publish_from_env(),
        help=f"enable the pretraining trigger (or set ${PRETRAIN_ON_PUBLISH_ENV}=1)",
    )
    parser.add_argument("--no-training", action="store_true", help="serve only the build and publish flows")
    parser.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_flows(ServeOptions(pretrain_on_publish=args.pretrain_on_publish, include_training=not args.no_training, limit=args.limit))


# ---------------------------------------------------------------------------- GPU work pool

GPU_WORK_POOL = "mmretinal-gpu"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class GpuDeployment(BaseModel):
    """One training deployment registered on the GPU work pool."""

    entrypoint: str = Field(description="'path/to/file.py:flow_function', relative to the project checkout.")
    name: str = Field(description="Deployment name; the full name is '<flow name>/<name>'.")
    description: str = Field(description="Shown in the Prefect UI.")
    tags: list[str] = Field(default_factory=list, description="Prefect tags.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Default parameters of its runs.")
    concurrency_limit: int | None = Field(1, description="Most runs of this deployment at once (one per GPU job).")
    on_publish_trigger: bool = Field(False, description="Carries the pretrain-on-publish event trigger.")


GPU_DEPLOYMENTS: tuple[GpuDeployment, ...] = (
    GpuDeployment(
        entrypoint="flows/pretrain.py:pretrain_flow",
        name=TRAINING_DEPLOYMENT_NAME,
        description="KeepFIT-CFP pretraining on the GPU pool; one run at a time.",
        tags=["keepfit", "pretrain", "gpu"],
        on_publish_trigger=True,
    ),
    GpuDeployment(
        entrypoint="flows/pretrain.py:pretrain_flow",
        name=f"{TRAINING_DEPLOYMENT_NAME}-ffa",
        description="KeepFIT-FFA pretraining (FFA-IR reports + MM-Retinal FFA pairs) on the GPU pool; one run at a time.",
        tags=["keepfit", "pretrain", "ffa", "gpu"],
        parameters={"config": "keepfit-ffa"},
    ),
    GpuDeployment(
        entrypoint="flows/evaluate.py:evaluate",
        name=TRAINING_DEPLOYMENT_NAME,
        description="Evaluate checkpoints on the GPU pool and publish report artifacts.",
        tags=["keepfit", "evaluate", "gpu"],
    ),
    *(
        GpuDeployment(
            entrypoint=f"flows/ffa.py:{flow_name}",
            name=FFA_DEPLOYMENT_NAME,
            description=description,
            tags=["keepfit", "ffa", "report", "gpu"],
        )
        for flow_name, description in FFA_REPORT_FLOWS
    ),
)


class GpuPoolOptions(BaseModel):
    """Where the training deployments run: a Prefect work pool whose workers sit on GPU hosts."""

    work_pool: str = Field(GPU_WORK_POOL, description="Work pool the deployments target; created when missing.")
    pool_type: Literal["process", "docker"] = Field(
        "process", description="'process' runs each flow in a subprocess of the worker; 'docker' in a container (needs prefect-docker)."
    )
    work_queue: str = Field("default", description="Work queue in the pool.")
    source: Path = Field(
        PROJECT_ROOT, description="Project checkout the flow runs start in; the same path must exist on the GPU host (or in the container)."
    )
    image: str | None = Field(None, description="Docker image with the project and its GPU torch installed (docker pools).")
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="Pool job variables, e.g. {'env': {'CUDA_VISIBLE_DEVICES': '0'}}."
    )
    pretrain_on_publish: bool = Field(False, description="Enable the pretrain-on-publish trigger on pretrain/keepfit.")


def ensure_work_pool(name: str, pool_type: str) -> None:
    """Create the work pool when missing; refuse one of another type (its workers could not run the jobs)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            template = _base_job_template(pool_type)
            client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
            logger.info("created work pool %s (%s)", name, pool_type)
            return
    if pool.type != pool_type:
        raise RuntimeError(f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}; pick another --pool")


def _base_job_template(pool_type: str) -> dict[str, Any]:
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    try:
        from prefect_docker.worker import DockerWorker
    except ImportError as exc:
        raise RuntimeError("a docker work pool needs prefect-docker: pip install prefect-docker") from exc
    return DockerWorker.get_default_base_job_template()


def deploy_gpu_flows(options: GpuPoolOptions) -> dict[str, str]:
    """Register the training deployments on the GPU work pool of $PREFECT_API_URL; returns full name -> id."""
    from prefect import Flow
    from prefect.settings import get_current_settings

    if options.pool_type == "docker" and not options.image:
        raise RuntimeError("a docker work pool needs --image (an image with the project installed)")
    if not get_current_settings().api.url:  # env var, profile or temporary settings
        raise RuntimeError("PREFECT_API_URL is not set: point it at the Prefect server the GPU workers poll")
    ensure_work_pool(options.work_pool, options.pool_type)
    source = options.source.resolve()
    job_variables = dict(options.job_variables)
    if options.pool_type == "docker":
        job_variables.setdefault("volumes", [f"{source}:{source}"])
    ids: dict[str, str] = {}
    for spec in GPU_DEPLOYMENTS:
        flow_ = Flow.from_source(source=str(source), entrypoint=spec.entrypoint)
        deployment = flow_.to_deployment(
            name=spec.name,
            work_pool_name=options.work_pool,
            work_queue_name=options.work_queue,
            description=spec.description,
            tags=spec.tags,
            parameters=spec.parameters,
            concurrency_limit=spec.concurrency_limit,
            triggers=[published_trigger(options.pretrain_on_publish)] if spec.on_publish_trigger else None,
            job_variables=job_variables,
        )
        # apply() registers without building or pushing an image (and without deploy()'s console table)
        deployment_id = deployment.apply(image=options.image if options.pool_type == "docker" else None)
        ids[f"{flow_.name}/{spec.name}"] = str(deployment_id)
        logger.info("deployed %s/%s to work pool %s", flow_.name, spec.name, options.work_pool)
    return ids


if __name__ == "__main__":
    main()
