"""Composition root of the EGIL SCIM receiver: the SCIM endpoints an EGIL client pushes to."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator, model_validator

from skolsynk.adapters.egil import EgilMappingError, EgilResourceType, from_egil
from skolsynk.connectors.registry import RegistryFollower
from skolsynk.connectors.sources import EGIL
from skolsynk.contracts.source import SourceDeletion, SourceRecord
from skolsynk.domain.ss12000 import SCHOOL_UNIT_CODE
from skolsynk.json_input import INT64_MAX, UnsafeJson, parse_json
from skolsynk.logging import bound_context, get_logger
from skolsynk.proxies import parse_networks
from skolsynk.runtime import run_service
from skolsynk.service import ServiceApp
from skolsynk.settings import ServiceSettings
from skolsynk.storage.sources import INDEXES as SOURCE_INDEXES
from skolsynk.storage.sources import SecretBox, SourceStore
from skolsynk_services.egil_receiver.access import Caller, Gate, Refusal, identify, proxy_list
from skolsynk_services.egil_receiver.clients import ClientRegistry, EgilClient, load_federation_pins
from skolsynk_services.egil_receiver.metrics import EgilReceiverMetrics
from skolsynk_services.egil_receiver.store import DEFAULT_PAGE_SIZE, INDEXES, ReceiverStore, RunPager
from skolsynk_services.egil_receiver.tls import ClientTrust, handshake_error, server_context

SERVICE = "egil-receiver"
log = get_logger(__name__)

SCIM_ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCIM_CONTENT_TYPE = "application/scim+json"
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
SCHEMA_PREFIXES = ("urn:scim:schemas:extension:sis:school:1.0:", "urn:ietf:params:scim:schemas:core:2.0:")
MAX_PAGE = 1000
#: How long a request over its client's rate waits for its turn before it is refused with 429.
RATE_LIMIT_WAIT_SECONDS = 10.0

CLIENT_KEY: web.RequestKey[EgilClient] = web.RequestKey("client", EgilClient)


class EgilReceiverSettings(ServiceSettings):
    egil_host: str = Field(default="0.0.0.0", description="Bind address of the SCIM endpoints.")  # noqa: S104
    egil_port: int = Field(default=8443, ge=0, le=65535, description="Port of the SCIM endpoints.")
    egil_base_path: str = Field(default="", description="Path prefix of the SCIM endpoints, e.g. /egil/v1.")
    egil_tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM); TLS when set.")
    egil_tls_key_file: Path | None = None
    egil_client_ca_file: Path | None = Field(
        default=None,
        description="CA bundle of client certificates (mutual TLS); not needed for certificates registered whole.",
    )
    egil_api_key_header: str = "X-API-Key"
    egil_trusted_proxies: str = Field(
        default="",
        max_length=2000,
        description="Comma-separated addresses or CIDRs of the TLS-terminating proxies whose client-certificate "
        "header (and X-Forwarded-For, for the log) is believed; empty: none.",
    )
    egil_api_key_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="A second TLS port serving the same endpoints without asking for client certificates: "
        "API keys only, for clients whose certificate the main port cannot check.",
    )
    egil_client_certificate_header: str = Field(
        default="ssl-client-cert",
        min_length=1,
        description="Header a trusted proxy passes the client certificate in (ingress-nginx: ssl-client-cert).",
    )
    egil_federation_metadata_file: Path | None = Field(
        default=None, description="Verified federation metadata JSON (Skolfederation); adds its client pins."
    )
    sources_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        le=60,
        description="How often the receiver looks for registered, changed or revoked clients.",
    )
    egil_run_idle_seconds: float = Field(
        default=2.0, gt=0, description="A run (the client's run: a burst of pushes) is completed after this quiet."
    )
    egil_run_max_age_seconds: float = Field(
        default=21600.0,
        gt=0,
        description="Guard only: a run that never pauses is completed at this age; the pause normally ends it.",
    )
    egil_page_seconds: float = Field(
        default=0.5, gt=0, description="While pushes go on, their writes are paged (sent on) at least this often."
    )
    egil_page_size: int = Field(
        default=DEFAULT_PAGE_SIZE,
        ge=1,
        le=2000,
        description="Records per page at most (an outbox entry stays far below 16 MiB).",
    )

    @model_validator(mode="after")
    def _key_port_over_tls(self) -> EgilReceiverSettings:
        if self.egil_api_key_port is not None and self.egil_tls_cert_file is None:
            raise ValueError(
                "egil_api_key_port needs TLS (egil_tls_cert_file): without it no port asks for certificates"
            )
        return self

    @field_validator("egil_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(proxy_list(value))
        return value


def scim_error(status: int, detail: str) -> web.Response:
    return web.json_response(
        {"schemas": [SCIM_ERROR], "status": str(status), "detail": detail},
        status=status,
        content_type=SCIM_CONTENT_TYPE,
    )


def storable_names(value: Any) -> bool:
    """True when no attribute name, at any depth, has a control character (the store refuses a NUL byte)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(CONTROL_CHARACTER.search(key) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def check_body(resource_type: EgilResourceType, body: Any, url_id: str | None) -> tuple[str, SourceRecord]:
    """Validation at the door; returns the resource id and its canonical record, or raises ValueError
    with a precise detail (never the submitted values: they may be personal data)."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    if not storable_names(body):
        # A NUL byte in a name is a document the store cannot hold (it was a 500: issue 19, the fuzz suite).
        raise ValueError("attribute names must not contain control characters")
    schemas = body.get("schemas")
    if schemas is not None:
        if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
            raise ValueError("schemas must be a list of URNs")
        unknown = [s for s in schemas if not s.startswith(SCHEMA_PREFIXES)]
        if unknown:
            # Never the value itself: a client has been seen to send a person's name there.
            raise ValueError(f"unknown schema: schemas[{schemas.index(unknown[0])}] is not an EGIL or SCIM URN")
    external_id = body.get("externalId")
    if not isinstance(external_id, str) or not external_id:
        raise ValueError("missing required attribute externalId")
    if not UUID_PATTERN.match(external_id):
        raise ValueError("invalid UUID in externalId")
    # One canonical form (lower case, as RFC 4122 writes UUIDs): "ABC..." and "abc..." are one object here
    # as they are in the normaliser, so deleting either deletes the one object.
    external_id = external_id.lower()
    body = {**body, "externalId": external_id}
    if url_id is not None and url_id.lower() != external_id:
        raise ValueError("the id in the URL differs from externalId")
    if resource_type is EgilResourceType.SCHOOL_UNITS:
        code = body.get("schoolUnitCode")
        if not isinstance(code, str) or not SCHOOL_UNIT_CODE.match(code):
            raise ValueError("schoolUnitCode must be exactly 8 digits")
    try:
        record = from_egil(resource_type, body)
    except EgilMappingError as error:
        raise ValueError(str(error)) from error
    return external_id, record


def build_scim_app(
    store: ReceiverStore,
    registry: ClientRegistry,
    *,
    base_path: str = "",
    api_key_header: str = "X-API-Key",
    on_write: Callable[[str, str], None] | None = None,
    gate: Gate | None = None,
) -> web.Application:
    """The SCIM endpoints. A write request makes one store write (see :mod:`egil_receiver.store`);
    ``on_write(tenant_id, source_id)`` is told of each acknowledged write (the run pager); ``gate`` finds
    the certificate and logs (and counts) refusals."""
    gate = gate or Gate(lambda reason: None)

    def written(client: EgilClient) -> None:
        if on_write is not None:
            on_write(client.tenant_id, client.source_id)

    @web.middleware
    async def authenticate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        found = gate.caller(request)
        if isinstance(found, tuple):
            return gate.refuse(found[1], request, found[0])
        caller: Caller = found
        client = identify(registry, caller.pin, request.headers.get(api_key_header))
        if isinstance(client, Refusal):
            return gate.refuse(client, request, caller)
        limiter = registry.limiter(client)
        # Over its rate a client waits for its turn (a one-at-a-time client is paced, not failed: the
        # EGIL client does not retry within a run); only a wait beyond the bound is refused.
        try:
            async with asyncio.timeout(RATE_LIMIT_WAIT_SECONDS):
                await limiter.acquire()
        except TimeoutError:
            response = gate.refuse(
                Refusal.RATE_LIMITED, request, caller, tenant_id=client.tenant_id, source_id=client.source_id
            )
            response.headers["Retry-After"] = "1"
            return response
        request[CLIENT_KEY] = client
        with bound_context(tenant_id=client.tenant_id, source_id=client.source_id):
            return await handler(request)

    def resource_type_of(request: web.Request) -> EgilResourceType:
        try:
            return EgilResourceType(request.match_info["type"])
        except ValueError:
            raise web.HTTPNotFound(text="unknown resource type") from None

    async def read_json(request: web.Request) -> Any:
        try:
            return parse_json(await request.read())
        except UnsafeJson as error:
            raise web.HTTPBadRequest(text=str(error)) from None

    async def write(request: web.Request, url_id: str | None, *, method: str) -> web.Response:
        client = request[CLIENT_KEY]
        resource_type = resource_type_of(request)
        try:
            body = await read_json(request)
        except web.HTTPBadRequest as error:
            return scim_error(400, error.text or "malformed JSON")
        try:
            resource_id, _ = check_body(resource_type, body, url_id)
        except ValueError as error:
            log.info("push_rejected", method=method, resource_type=resource_type.value, reason=str(error))
            return scim_error(400, str(error))
        body["externalId"] = resource_id  # stored in its canonical form, as it is known everywhere
        store_write = store.create if method == "POST" else store.replace
        stored = await store_write(
            tenant_id=client.tenant_id,
            source_id=client.source_id,
            resource_type=resource_type.value,
            resource_id=resource_id,
            body=body,
        )
        if not stored:
            if method == "POST":
                return scim_error(409, f"{resource_type.value}/{resource_id} already exists")
            return scim_error(404, f"{resource_type.value}/{resource_id} does not exist")
        written(client)
        return web.json_response(
            {**body, "id": resource_id}, status=201 if method == "POST" else 200, content_type=SCIM_CONTENT_TYPE
        )

    async def post(request: web.Request) -> web.Response:
        return await write(request, None, method="POST")

    async def put(request: web.Request) -> web.Response:
        return await write(request, request.match_info["id"], method="PUT")

    async def delete(request: web.Request) -> web.Response:
        client = request[CLIENT_KEY]
        resource_type = resource_type_of(request)
        resource_id = request.match_info["id"].lower()
        await request.read()  # the client sends an empty form-encoded body
        if not UUID_PATTERN.match(resource_id):
            return scim_error(400, "the id in the URL is not a UUID")
        deleted = await store.delete(
            tenant_id=client.tenant_id,
            source_id=client.source_id,
            resource_type=resource_type.value,
            resource_id=resource_id,
            deletion=SourceDeletion(kind=resource_type.kind, key=resource_id),
        )
        if not deleted:
            return scim_error(404, f"{resource_type.value}/{resource_id} does not exist")
        written(client)
        return web.Response(status=204)

    async def list_resources(request: web.Request) -> web.Response:
        client = request[CLIENT_KEY]
        resource_type = resource_type_of(request)
        try:
            # Clamped before use: an index past any list (even past 64 bits) is simply an empty page.
            start = min(max(int(request.query.get("startIndex", "1")), 1), INT64_MAX)
            count = min(max(int(request.query.get("count", str(MAX_PAGE))), 0), MAX_PAGE)
        except ValueError:
            return scim_error(400, "startIndex and count must be integers")
        total, documents = await store.page(client.tenant_id, client.source_id, resource_type.value, start, count)
        return web.json_response(
            {
                "schemas": [SCIM_LIST],
                "totalResults": total,
                "startIndex": start,
                "itemsPerPage": len(documents),
                "Resources": [{**d["body"], "id": d["resource_id"]} for d in documents],
            },
            content_type=SCIM_CONTENT_TYPE,
        )

    async def get_one(request: web.Request) -> web.Response:
        client = request[CLIENT_KEY]
        resource_type = resource_type_of(request)
        resource_id = request.match_info["id"].lower()
        if not UUID_PATTERN.match(resource_id):
            return scim_error(400, "the id in the URL is not a UUID")
        document = await store.get(client.tenant_id, client.source_id, resource_type.value, resource_id)
        if document is None:
            return scim_error(404, f"{resource_type.value}/{resource_id} does not exist")
        return web.json_response({**document["body"], "id": document["resource_id"]}, content_type=SCIM_CONTENT_TYPE)

    app = web.Application(middlewares=[authenticate])
    prefix = "/" + base_path.strip("/") if base_path.strip("/") else ""
    app.router.add_post(prefix + "/{type}", post)
    app.router.add_get(prefix + "/{type}", list_resources)
    app.router.add_put(prefix + "/{type}/{id}", put)
    app.router.add_delete(prefix + "/{type}/{id}", delete)
    app.router.add_get(prefix + "/{type}/{id}", get_one)
    return app


def build(settings: EgilReceiverSettings, *, clients: list[EgilClient] | None = None) -> ServiceApp:
    """The receiver, its clients followed in the source registry; ``clients`` replaces the registry (tests)."""
    app = ServiceApp.create(SERVICE, settings)
    app.add_indexes([*INDEXES, *SOURCE_INDEXES])
    registry = ClientRegistry(
        clients or [], federation_pins=load_federation_pins(settings.egil_federation_metadata_file)
    )
    app.extensions["clients"] = registry
    metrics = EgilReceiverMetrics(app.metrics.registry)
    app.extensions["metrics"] = metrics

    def count(reason: Refusal) -> None:
        metrics.refusals.labels(reason=reason.value).inc()

    gate = Gate(
        count,
        certificate_header=settings.egil_client_certificate_header,
        trusted_proxies=proxy_list(settings.egil_trusted_proxies),
    )

    def handshake_refused(error: ssl.SSLError) -> None:
        gate.refused(Refusal.TLS_HANDSHAKE, tls_error=handshake_error(error))

    ssl_context: ssl.SSLContext | None = None
    if settings.egil_tls_cert_file is not None:
        trust = ClientTrust(
            settings.egil_tls_cert_file,
            settings.egil_tls_key_file,
            client_ca_file=settings.egil_client_ca_file,
            on_refused=handshake_refused,
        )
        registry.watch_certificates(trust.update)
        app.extensions["trust"] = trust
        ssl_context = trust.context
    if clients is None:
        # Pins and key hashes are not secrets: no key is needed to read them.
        follower = RegistryFollower(
            SourceStore(app.db, SecretBox(None)), EGIL, registry, poll_seconds=settings.sources_poll_seconds
        )
        app.extensions["registry"] = follower
        app.add_startup(follower.load)
        app.add_background("follow-sources", follower.follow)
    store = ReceiverStore(
        app.mongo,
        app.db,
        app.outbox,
        exchange=app.topology.exchange("source"),
        producer=SERVICE,
        page_size=settings.egil_page_size,
    )
    pager = RunPager(
        store,
        idle_seconds=settings.egil_run_idle_seconds,
        max_age_seconds=settings.egil_run_max_age_seconds,
        page_seconds=settings.egil_page_seconds,
    )
    app.extensions["store"] = store
    app.extensions["pager"] = pager

    async def separate_sources() -> None:
        await store.migrate_to_source_ids()
        await store.migrate_to_lower_case_ids()

    app.add_startup(separate_sources)

    def scim_app() -> web.Application:
        return build_scim_app(
            store,
            registry,
            base_path=settings.egil_base_path,
            api_key_header=settings.egil_api_key_header,
            on_write=pager.written,
            gate=gate,
        )

    scim = scim_app()
    app.add_web_app(scim, host=settings.egil_host, port=settings.egil_port, ssl_context=ssl_context, server="scim")
    if settings.egil_api_key_port is not None and settings.egil_tls_cert_file is not None:
        keys_only = scim_app()
        context = server_context(settings.egil_tls_cert_file, settings.egil_tls_key_file, on_refused=handshake_refused)
        app.add_web_app(
            keys_only, host=settings.egil_host, port=settings.egil_api_key_port, ssl_context=context, server="scim"
        )

    async def page_what_is_left() -> None:
        # At shutdown: what was acknowledged goes on its way now (the run stays open for the next process).
        try:
            await pager.flush_all()
        except Exception:
            log.exception("egil_paging_at_shutdown_failed")

    app.add_background("run-pager", pager.run)
    app.add_shutdown(page_what_is_left)
    return app


def main() -> None:
    run_service(SERVICE, EgilReceiverSettings, build)
