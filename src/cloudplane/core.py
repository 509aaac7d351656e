"""The process-wide set of collaborators every service and workflow works with."""

from __future__ import annotations

from dataclasses import dataclass

from cloudplane.config import Settings
from cloudplane.db.engine import Database
from cloudplane.providers.registry import ProviderRegistry, build_registry
from cloudplane.services.catalog import Catalog
from cloudplane.services.stripe_gateway import StripeGateway, gateway_of


@dataclass
class Core:
    settings: Settings
    db: Database
    catalog: Catalog
    providers: ProviderRegistry
    # Card payments; None (no CLOUDPLANE_STRIPE_API_KEY): payments are offline.
    stripe: StripeGateway | None = None

    @classmethod
    def build(cls, settings: Settings) -> Core:
        db = Database(settings.database_url)
        providers = build_registry(settings, db)
        return cls(
            settings=settings,
            db=db,
            catalog=Catalog(db, providers),
            providers=providers,
            stripe=gateway_of(settings, db),
        )
