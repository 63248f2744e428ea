"""An operator's hand on a quarantined fragment: re-admit it (after a code fix) or delete it.

The Compact step quarantines (logic/steps.py); only an admin takes a file out of quarantine.
Re-admitted, the file is live again and its dataset pending: the next run compacts it, or
quarantines it again with the new reason. Deleted, it is removed from the dataset (its rows with
it) and its object becomes garbage at once: the scheduled run's sweep deletes it, as it deletes
every replaced object, so the API needs no right to delete data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from fusou_compaction.catalog.client import Catalog
from fusou_compaction.observability import logger

QuarantineVerb = Literal["readmit", "delete"]


@dataclass(frozen=True)
class QuarantineOutcome:
    fragment_id: UUID
    dataset_id: UUID
    action: QuarantineVerb
    changed: bool  # False: it was already done
    compaction_needed: bool


def act_on_quarantined(catalog: Catalog, fragment_id: UUID, action: QuarantineVerb) -> QuarantineOutcome:
    """Raises CatalogNotFound (no such file), InputsNotLive (re-admitting a deleted or compacted
    file) or InvalidCatalogArgument (deleting a file that is not quarantined)."""
    if action == "readmit":
        readmitted = catalog.readmit_quarantined(fragment_id)
        changed, file = readmitted.readmitted, readmitted.file
    else:
        deleted = catalog.delete_quarantined(fragment_id, grace_seconds=0)
        changed, file = deleted.deleted, deleted.file
    dataset = catalog.get_dataset(file.dataset_id)
    logger.info(
        f"quarantined fragment: {action}",
        extra={"fragmentId": str(fragment_id), "datasetId": str(file.dataset_id), "changed": changed},
    )
    return QuarantineOutcome(fragment_id, file.dataset_id, action, changed, dataset.compaction_needed)
