"""Composition root of a vendor dispatcher. It serves one vendor (``SKOLSYNK_VENDOR_ID``: a deployment
per large vendor) or every vendor of the catalogue (unset), as the catalogue in the store says, and follows
it: a vendor an operator adds, edits or retires in the admin is served, restarted or stopped without a
restart (:class:`~skolsynk_services.dispatcher.vendors.VendorPool`). The catalogue files
(``SKOLSYNK_VENDOR_CATALOGUE_DIR``) seed the store at start with the vendors it does not have yet."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from skolsynk.logging import get_logger
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import CatalogueSettings
from skolsynk.storage import deliveries as ledger
from skolsynk.storage import delivery_backlog, delivery_health, vendor_credentials
from skolsynk.storage import vendors as vendor_store
from skolsynk_services.dispatcher import drift
from skolsynk_services.dispatcher.vendors import SERVICE, VendorPool

log = get_logger(__name__)


class DispatcherSettings(CatalogueSettings):
    vendor_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="The one vendor this dispatcher serves; unset: every vendor of the catalogue.",
    )
    admin_secrets_key: SecretStr | None = Field(
        default=None,
        description="The installation's key that opens the per-organiser vendor credentials the admin sealed.",
    )
    vendor_secrets_dir: Path | None = Field(
        default=None,
        description="Folder of the mounted Kubernetes Secret whose keys per-organiser vendor credentials may "
        "reference (each key a file, read at every poll: a rotated Secret is used without a restart).",
    )
    vendor_retry_timeout_seconds: float = Field(
        default=20.0, gt=0, description="How long one delivery retries an unavailable vendor before requeueing."
    )
    feed_compaction_seconds: float = Field(
        default=60.0,
        ge=0,
        description="A queue vendor's unread feed is compacted this long after a delete (upserts the delete "
        "supersedes are taken out, docs/gdpr.md); 0: never.",
    )
    drift_check_hours: float = Field(
        default=24.0,
        ge=0,
        description="How often an EGIL SCIM vendor's holdings are compared with the ledger (and repaired); 0: never.",
    )


class ConfigurationError(RuntimeError):
    pass


def build(settings: DispatcherSettings) -> ServiceApp:
    name = f"{SERVICE}-{settings.vendor_id}" if settings.vendor_id else SERVICE
    app = ServiceApp.create(name, settings, vendor_ids=[settings.vendor_id] if settings.vendor_id else [])
    app.add_indexes(
        [
            *ledger.INDEXES,
            *vendor_store.INDEXES,
            *drift.INDEXES,
            *delivery_health.INDEXES,
            *delivery_backlog.INDEXES,
            *vendor_credentials.INDEXES,
        ],
        retired=ledger.RETIRED_INDEXES,
    )
    store = vendor_store.VendorStore(app.db)
    pool = VendorPool(app, settings, store, only=settings.vendor_id, poll_seconds=settings.vendors_poll_seconds)
    app.extensions["pool"] = pool
    app.health.add_readiness_check("vendors", pool.ready)

    async def prepare() -> None:
        """Seed the store from the catalogue files, then serve the catalogue's vendors. Runs once at start."""
        await vendor_store.seed_catalogue(store, settings.vendor_catalogue_dir)
        problems = await pool.sync()
        if settings.vendor_id is not None:
            worker = pool.workers.get(settings.vendor_id)
            if worker is None:
                raise ConfigurationError(
                    problems.get(settings.vendor_id)
                    or f"vendor {settings.vendor_id!r} is not in the catalogue (or is retired)"
                )
            # The one vendor's parts, for tests and tools that look at them.
            app.extensions["deliverer"] = worker.deliverer
            if worker.compactor is not None:
                app.extensions["feed_compactor"] = worker.compactor
            if worker.drift is not None:
                app.extensions["drift"] = worker.drift

    app.add_startup(prepare)
    app.add_background("vendor-pool", pool.run_forever)
    app.add_shutdown(pool.stop)
    return app


def main() -> None:
    run_service(SERVICE, DispatcherSettings, build)
