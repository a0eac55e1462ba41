"""An EGIL client as a source: the organiser's on-premises directory pushing SS 12000 (2018) over SCIM to
the EGIL receiver. It has no settings of its own yet: the receiver's clients file says who may push."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from skolsynk.connectors.config import TENANT_ID
from skolsynk.contracts.source import SOURCE_ID


class SourceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(pattern=TENANT_ID)
    source_id: str = Field(pattern=SOURCE_ID)

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.source_id}"
