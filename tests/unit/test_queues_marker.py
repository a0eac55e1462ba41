"""The tests' ``@pytest.mark.queues`` (tests/conftest.py): the apps a marked test builds declare only the
system work queues it names, plus those of the vendors and connectors they are built for."""

from __future__ import annotations

import pytest

from skolsynk.service import ServiceApp
from skolsynk.settings import BrokerSettings, ServiceSettings
from skolsynk_services.normaliser.app import NormaliserSettings
from skolsynk_services.normaliser.app import build as build_normaliser

pytestmark = pytest.mark.unit

SETTINGS = ServiceSettings(broker=BrokerSettings(namespace="ns"))


def queues(app: ServiceApp) -> set[str]:
    return {spec.name for spec in app.topology.queues}


def test_an_unmarked_test_declares_the_whole_system_topology() -> None:
    app = ServiceApp.create("svc", SETTINGS, vendor_ids=["acme"])
    assert queues(app) == {
        "ns.normaliser.source-events",
        "ns.normaliser.projections",
        "ns.connectors.sync-requests",
        "ns.gdpr.events",
        "ns.dispatcher.acme",
    }


@pytest.mark.queues("connectors.sync-requests")
def test_a_marked_test_declares_the_queues_it_names_and_those_of_its_vendors_and_connectors() -> None:
    app = ServiceApp.create("svc", SETTINGS, vendor_ids=["acme"], connector_kinds=["google"])
    assert queues(app) == {"ns.connectors.sync-requests", "ns.dispatcher.acme", "ns.google.sync-requests"}
    assert set(app.topology.exchanges) == {"ns.source", "ns.vendor", "ns.control", "ns.gdpr", "ns.dead-letter"}


@pytest.mark.queues("gdpr.events")
def test_a_service_built_by_a_marked_test_consumes_only_what_it_names() -> None:
    with pytest.raises(KeyError, match=r"ns\.normaliser\.source-events"):
        build_normaliser(NormaliserSettings.model_validate(SETTINGS.model_dump()))


@pytest.mark.queues("connectors.sync-request")
def test_a_name_that_is_no_system_queue_is_refused() -> None:
    with pytest.raises(ValueError, match=r"connectors\.sync-request'\]"):
        ServiceApp.create("svc", SETTINGS)
