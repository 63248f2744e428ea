"""Alerts: an SNS topic in AWS, a log line locally."""

from __future__ import annotations

import json
from typing import Any

from fusou_compaction.observability import logger


class SnsAlerts:
    def __init__(self, client: Any, topic_arn: str) -> None:
        self._sns = client
        self._topic = topic_arn

    def publish(self, subject: str, message: dict[str, Any]) -> None:
        self._sns.publish(TopicArn=self._topic, Subject=subject[:100], Message=json.dumps(message, default=str))


class LogAlerts:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, subject: str, message: dict[str, Any]) -> None:
        self.published.append((subject, message))
        logger.warning(f"ALERT: {subject}", extra={"alert": message})
