"""Serve the project's flows as Prefect deployments: `python -m flows.deployments` or `mmretinal serve-flows`.

Deployments: `build-dataset/mm-retinal`, `publish-manifest/mm-retinal` and, when their modules
are importable, `pretrain/keepfit` (one run at a time; an event trigger on
`mmretinal.manifest.published` that passes the new dataset and version, shipped disabled) and
`evaluate/keepfit`, and the angiography half: `pretrain/keepfit-ffa` (the pretrain flow with the
`keepfit-ffa` config), `ffa-report-train/keepfit-ffa` and `ffa-report-evaluate/keepfit-ffa`.
Runs of a served deployment execute in this process's machine.
"""

from __future__ import annotations

from flows import prefect_env

prefect_env.apply_defaults()

import argparse  # noqa: E402 - Prefect reads its settings from the environment on import
import importlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

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
    train = _optional_flow("flows.ffa", "ffa_report_train_flow")
    if train is not None:
        deployments.append(
            train.to_deployment(
                name=FFA_DEPLOYMENT_NAME,
                description="Train the FFA report generator, select on validation, score test once.",
                concurrency_limit=1,
                tags=["keepfit", "ffa", "report"],
            )
        )
    evaluate = _optional_flow("flows.ffa", "ffa_report_evaluate_flow")
    if evaluate is not None:
        deployments.append(
            evaluate.to_deployment(
                name=FFA_DEPLOYMENT_NAME,
                description="Score a report generator on an FFA-IR split and publish report artifacts.",
                concurrency_limit=1,
                tags=["keepfit", "ffa", "report"],
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


if __name__ == "__main__":
    main()
