"""Logger, Tracer and Metrics, created once for the whole process.

The Tracer is created on first use (PEP 562): the X-Ray SDK it loads costs ~100-200 ms of cold
start (it pulls in botocore). The API function does not use it — API Gateway and Lambda's active
tracing already trace each request — so its cold start stays short.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

    tracer: Tracer  # provided by __getattr__ below

SERVICE = "fusou-compaction"
NAMESPACE = "FUSOU/Compaction"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Every metric carries its stage, so that the alarms of one stage watch only that stage (the
# alarms name both dimensions: infra/fusou_infra/monitoring.py). Read here, not from Settings:
# metrics exist before any handler has validated its settings.
metrics.set_default_dimensions(stage=os.environ.get("FUSOU_STAGE", "dev"))


@cache
def _tracer() -> Tracer:
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


def __getattr__(name: str) -> Any:
    if name == "tracer":
        return _tracer()
    raise AttributeError(name)
