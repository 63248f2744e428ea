"""Logger, Tracer and Metrics, created once for the whole process."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "fusou-compaction"
NAMESPACE = "FUSOU/Compaction"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
