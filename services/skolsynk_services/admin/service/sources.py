"""Connected sources (settings and credentials, never returned), sync requests and the runs they made."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from skolsynk.connectors.sources import SOURCE_KINDS
from skolsynk.connectors.sources.egil import MAX_CLIENT_CERTIFICATES
from skolsynk.connectors.sources.google import delegation_scopes
from skolsynk.contracts.sync import SourceCheckCompleted, SourceCheckRequested, SyncRequested
from skolsynk.domain.source_errors import hint_for
from skolsynk.messaging import UnroutableMessage, sync_request_routing_key
from skolsynk.storage import Document
from skolsynk.storage.sources import SecretsUnavailable
from skolsynk.tls import first_certificate_pem, spki_sha256_pin
from skolsynk_services.admin import models
from skolsynk_services.admin.auth import Principal
from skolsynk_services.admin.problems import Conflict, Invalid, NotFound, Unavailable
from skolsynk_services.admin.service.core import PRODUCER, AdminCore, utcnow

#: Microsoft's admin-consent endpoint (v2: the permissions come from the app registration, ``.default``).
MICROSOFT_CONSENT_URL = "https://login.microsoftonline.com/organizations/v2.0/adminconsent"
#: The Microsoft Graph application permissions skolsynk's app asks for (docs/graph-connector.md).
#: The least the connector needs (issue 23): EduRoster.Read.All for every /education endpoint it reads,
#: Member.Read.Hidden for class members and teachers. EduAdministration.Read.All is for no endpoint it uses.
MICROSOFT_PERMISSIONS = ("EduRoster.Read.All", "Member.Read.Hidden")
#: The admin UI's page Microsoft redirects to after a consent.
CONSENT_PATH = "/ui/consent/microsoft"
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")

PULLED_KINDS = frozenset({models.SourceKind.GOOGLE, models.SourceKind.MICROSOFT, models.SourceKind.SS12000})


def source_view(doc: Document) -> models.Source:
    """A stored source as the API shows it: secret values never leave the store."""
    return models.Source(
        source_id=doc["source_id"],
        kind=doc["kind"],
        display_name=doc["display_name"],
        enabled=doc.get("enabled", True),
        settings=doc["settings"],
        secrets_set=doc.get("secret_names", []),
        secret_refs=doc.get("secret_refs", {}),
        problem=(doc.get("problem") or {}).get("message"),
        problem_at=(doc.get("problem") or {}).get("at"),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


class SourceAdmin(AdminCore):
    def _source(self, doc: Document) -> models.Source:
        """:func:`source_view`, with what the organiser's admin needs to set up a Google source."""
        view = source_view(doc)
        if doc["kind"] != models.SourceKind.GOOGLE.value:
            return view
        reports = bool(((doc.get("settings") or {}).get("reports") or {}).get("enabled"))
        client_id: str | None = None
        try:
            key = json.loads(self.sources.secrets_of(doc).get("service_account_key") or "{}")
            client_id = str(key["client_id"]) if isinstance(key, dict) and key.get("client_id") else None
        except (SecretsUnavailable, ValueError):
            client_id = None  # not readable here: the page says where to find it
        delegation = models.GoogleDelegation(client_id=client_id, scopes=list(delegation_scopes(reports=reports)))
        return view.model_copy(update={"delegation": delegation})

    async def _with_health(self, tenant_id: str, view: models.Source) -> models.Source:
        health = await self.source_runs.health(
            tenant_id, view.source_id, now=self.clock(), failing_after=self.delivery_failing_after
        )
        errors = []
        for code in health.errors:
            hint = hint_for(view.kind.value, code)
            errors.append(
                models.SourceErrorView(code=code, title=hint.title, fix=hint.fix, needs_admin=hint.needs_admin)
                if hint is not None
                else models.SourceErrorView(code=code)
            )
        return view.model_copy(
            update={
                "health": models.SourceHealthView(
                    state=health.state,
                    failing_since=health.failing_since,
                    failed_runs=health.failed_runs,
                    errors=errors,
                    reasons=health.reasons,
                    last_complete_at=health.last_complete_at,
                    running_since=health.running_since,
                )
            }
        )

    async def list_sources(self, principal: Principal, tenant_id: str) -> list[models.Source]:
        await self._tenant(principal, tenant_id)
        return [await self._with_health(tenant_id, self._source(d)) for d in await self.sources.list(tenant_id)]

    async def get_source(self, principal: Principal, tenant_id: str, source_id: str) -> models.Source:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound("no source with that id")
        return await self._with_health(tenant_id, self._source(doc))

    async def save_source(
        self, principal: Principal, tenant_id: str, body: models.SourceIn, *, create: bool
    ) -> models.Source:
        await self._tenant(principal, tenant_id)
        current = await self.sources.get(tenant_id, body.source_id)
        if current is not None and current.get("kind") != body.kind.value:
            raise Conflict(f"the source with that id is of another kind ({current.get('kind')})")
        stored = set((current or {}).get("secret_names", []))
        problems = SOURCE_KINDS[body.kind.value].problems(
            body.settings,
            secret_names=(stored | set(body.secrets)) - set(body.secret_refs),
            secret_refs=body.secret_refs,
        )
        if problems:
            raise Invalid(
                f"the {body.kind.value} source is not complete: {', '.join(p.field for p in problems)}",
                errors=[{"field": p.field, "message": p.message} for p in problems],
            )
        try:
            doc = await self.sources.save(
                tenant_id,
                body.source_id,
                kind=body.kind.value,
                enabled=body.enabled,
                display_name=body.display_name,
                settings=body.settings,
                secrets=body.secrets,
                secret_refs=body.secret_refs,
                create=create,
            )
        except SecretsUnavailable as error:
            raise Invalid(str(error)) from None
        if doc is None:
            raise (Conflict("a source with that id exists already") if create else NotFound("no source with that id"))
        after = source_view(doc).model_dump(mode="json", exclude={"created_at", "updated_at"})
        before = source_view(current).model_dump(mode="json", exclude={"created_at", "updated_at"}) if current else None
        await self._audit(
            principal,
            tenant_id,
            "source.create" if create else "source.update",
            body.source_id,
            before=before,
            after=after,
        )
        return self._source(doc)

    async def delete_source(self, principal: Principal, tenant_id: str, source_id: str) -> None:
        await self._tenant(principal, tenant_id)
        current = await self.sources.get(tenant_id, source_id)
        if current is None or not await self.sources.delete(tenant_id, source_id):
            raise NotFound("no source with that id")
        await self._audit(
            principal, tenant_id, "source.delete", source_id, before=source_view(current).model_dump(mode="json")
        )

    async def request_sync(self, principal: Principal, tenant_id: str, source_id: str, mode: str) -> uuid.UUID:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound("no source with that id")
        kind = models.SourceKind(doc["kind"])
        if kind not in PULLED_KINDS:
            raise Conflict("an EGIL source pushes its data: ask the organiser's EGIL client to send it")
        if not doc.get("enabled", True):
            raise Conflict("the source is disabled: enable it before asking for a sync")
        problem = (doc.get("problem") or {}).get("message")
        if problem:
            raise Conflict(f"the connector cannot read the source: {problem}")
        message_id = await self._send(
            tenant_id,
            SyncRequested(source_id=source_id, mode=mode, requested_by="admin-ui"),
            self.exchanges.control,
            sync_request_routing_key(kind.value),
        )
        await self._audit(principal, tenant_id, "source.sync", source_id, after={"mode": mode})
        return message_id

    # -- "test connection": the connector of the kind tries the settings and answers over RabbitMQ ----

    async def check_source(
        self, principal: Principal, tenant_id: str, source_id: str, body: models.SourceIn | None = None
    ) -> models.SourceCheck:
        """Ask the connector of the source's kind to try it (the saved source, or ``body``: settings not
        saved yet, with the stored secrets for those the body leaves out) and wait for its answer."""
        await self._tenant(principal, tenant_id)
        current = await self.sources.get(tenant_id, source_id)
        if body is None and current is None:
            raise NotFound("no source with that id")
        kind = models.SourceKind(body.kind if body is not None else current["kind"])  # type: ignore[index]
        if kind not in PULLED_KINDS:
            raise Conflict("an EGIL source pushes its data: it is tested by its client sending")
        stored = self.sources.secrets_of(current) if current is not None and current["kind"] == kind.value else {}
        if body is None:
            assert current is not None
            settings, secrets, refs = current["settings"], stored, current.get("secret_refs") or {}
        else:
            refs = body.secret_refs
            secrets = {k: v for k, v in {**stored, **body.secrets}.items() if k not in refs}
            problems = SOURCE_KINDS[kind.value].problems(body.settings, secret_names=set(secrets), secret_refs=refs)
            if problems:
                raise Invalid(
                    f"the {kind.value} source is not complete: {', '.join(p.field for p in problems)}",
                    errors=[{"field": p.field, "message": p.message} for p in problems],
                )
            settings = body.settings
        try:
            sealed = self.sources.box.seal(secrets) if secrets else None
        except SecretsUnavailable as error:
            raise Invalid(str(error)) from None
        request = SourceCheckRequested(
            source_id=source_id,
            settings=settings,
            sealed_secrets=sealed,
            secret_refs=refs,
            reply_to=await self._reply_queue(),
            deadline_at=utcnow() + timedelta(seconds=self.check_timeout_seconds),  # wall clock: another process
        )
        envelope = request.to_envelope(tenant_id=tenant_id, producer=PRODUCER)
        assert self.replies is not None
        self.replies.expect(envelope.message_id)
        try:
            await self.publisher.publish(
                envelope, exchange=self.exchanges.control, routing_key=sync_request_routing_key(kind.value)
            )
        except UnroutableMessage as error:
            self.replies.forget(envelope.message_id)
            raise Unavailable("no service is consuming this request right now; it was not sent") from error
        try:
            answer = await self.replies.wait(envelope.message_id, self.check_timeout_seconds + 2)
        except TimeoutError:
            return models.SourceCheck(
                source_id=source_id, ok=False, error_code="no_answer", counts={}, complete=False,
                detail=f"the {kind.value} connector did not answer within {self.check_timeout_seconds:g} s",
                elapsed_seconds=self.check_timeout_seconds,
            )  # fmt: skip
        result = SourceCheckCompleted.from_envelope(answer)
        await self._audit(principal, tenant_id, "source.check", source_id, after={"ok": result.ok})
        return models.SourceCheck.model_validate(result.model_dump(exclude={"message_type", "schema_version"}))

    async def _reply_queue(self) -> str:
        if self.replies is None:
            raise Unavailable("this admin cannot wait for answers")
        await self.replies.start()
        return self.replies.queue_name

    # -- Microsoft 365 through skolsynk's multi-tenant app: admin consent --------------------------

    def consent_redirect_uri(self, request_origin: str) -> str:
        """Where Microsoft sends the organiser's admin back (registered as a redirect URI of the app)."""
        return f"{self.public_url or request_origin.rstrip('/')}{CONSENT_PATH}"

    async def start_microsoft_consent(
        self, principal: Principal, tenant_id: str, body: models.MicrosoftConsentIn, *, redirect_uri: str
    ) -> models.MicrosoftConsent:
        """The admin-consent link for a Microsoft source read with skolsynk's app; the source is saved when
        Microsoft sends the organiser's admin back (:meth:`finish_microsoft_consent`)."""
        await self._tenant(principal, tenant_id)
        if self.microsoft_app_client_id is None:
            raise Conflict(
                "this installation has no multi-tenant Microsoft app (SKOLSYNK_ADMIN_MICROSOFT_APP_CLIENT_ID): "
                "connect the source with an app registration of the organiser's own"
            )
        current = await self.sources.get(tenant_id, body.source_id)
        if current is not None and current["kind"] != models.SourceKind.MICROSOFT.value:
            raise Conflict(f"the source with that id is of another kind ({current['kind']})")
        state = await self.consents.start(tenant_id, body.source_id, body.display_name, actor=principal.subject)
        query = urlencode(
            {"client_id": self.microsoft_app_client_id, "scope": "https://graph.microsoft.com/.default",
             "redirect_uri": redirect_uri, "state": state}
        )  # fmt: skip
        return models.MicrosoftConsent(
            consent_url=f"{MICROSOFT_CONSENT_URL}?{query}",
            permissions=list(MICROSOFT_PERMISSIONS),
            redirect_uri=redirect_uri,
        )

    async def finish_microsoft_consent(
        self, principal: Principal, state: str, *, azure_tenant_id: str | None, consented: bool, error: str | None
    ) -> tuple[str, models.Source]:
        """Microsoft's redirect after the consent: the source saved with the organiser's directory id, read
        with skolsynk's app (a client id and secret of its own are dropped); the organiser and the source."""
        consent = await self.consents.take(state)
        if consent is None:
            raise Invalid("the consent link has expired or was used already: start it again")
        tenant_id, source_id = consent["tenant_id"], consent["source_id"]
        await self._tenant(principal, tenant_id)
        if error is not None or not consented:
            raise Conflict(f"consent was not given at Microsoft ({(error or 'no consent')[:60]})")
        if azure_tenant_id is None or not GUID.match(azure_tenant_id):
            raise Invalid("Microsoft did not send the directory (tenant) id back")
        current = await self.sources.get(tenant_id, source_id)
        settings = {k: v for k, v in ((current or {}).get("settings") or {}).items() if k != "client_id"}
        settings["azure_tenant_id"] = azure_tenant_id
        doc = await self.sources.save(
            tenant_id,
            source_id,
            kind=models.SourceKind.MICROSOFT.value,
            enabled=(current or {}).get("enabled", True),
            display_name=(current or {}).get("display_name") or consent["display_name"],
            settings=settings,
            secrets={},
            secret_refs={k: v for k, v in ((current or {}).get("secret_refs") or {}).items() if k != "client_secret"},
            drop_secrets=["client_secret"],
            create=current is None,
        )
        assert doc is not None
        await self._audit(principal, tenant_id, "source.consent", source_id, after={"azure_tenant_id": azure_tenant_id})
        return tenant_id, self._source(doc)

    # -- EGIL clients: API keys, certificates and what to put in the client's configuration -----------

    async def _egil_source(self, principal: Principal, tenant_id: str, source_id: str) -> Document:
        await self._tenant(principal, tenant_id)
        doc = await self.sources.get(tenant_id, source_id)
        if doc is None:
            raise NotFound("no source with that id")
        if doc["kind"] != models.SourceKind.EGIL.value:
            raise Conflict("only an EGIL source has an API key or client certificates")
        return doc

    async def _resave(self, doc: Document, settings: dict[str, Any]) -> Document:
        saved = await self.sources.save(
            doc["tenant_id"],
            doc["source_id"],
            kind=doc["kind"],
            enabled=doc.get("enabled", True),
            display_name=doc["display_name"],
            settings=settings,
            secrets={},
            secret_refs=doc.get("secret_refs", {}),
            create=False,
        )
        if saved is None:
            raise NotFound("no source with that id")
        return saved

    def egil_connection(self, doc: Document, api_key: str | None = None) -> models.EgilConnection:
        settings = doc.get("settings") or {}
        lines = ["# skolsynk: " + str(doc["display_name"]).replace("\n", " ")]
        lines.append(f"scim-url = {self.egil.url}" if self.egil.url else "# scim-url = (ask the operator)")
        if self.egil.server_pin:
            lines.append(f"pinnedpubkey = sha256//{self.egil.server_pin}")
        if settings.get("client_pins"):
            lines += ["cert = <the client certificate>.pem", "key  = <its private key>.key"]
        if settings.get("api_key_sha256") or api_key:
            lines += [
                f"http-auth-key-header = {self.egil.api_key_header}",
                f"http-auth-key-value = {api_key or '<the API key shown when it was created>'}",
            ]
        return models.EgilConnection(
            scim_url=self.egil.url,
            server_pin=self.egil.server_pin,
            api_key_header=self.egil.api_key_header,
            has_api_key=bool(settings.get("api_key_sha256")),
            client_pins=list(settings.get("client_pins") or []),
            configuration="\n".join(lines) + "\n",
        )

    async def egil_client(self, principal: Principal, tenant_id: str, source_id: str) -> models.EgilConnection:
        return self.egil_connection(await self._egil_source(principal, tenant_id, source_id))

    async def issue_egil_api_key(self, principal: Principal, tenant_id: str, source_id: str) -> models.EgilApiKey:
        """A new API key for the EGIL client (shown once; only its hash is kept): it replaces the old key at
        the receiver's next look at the registry."""
        doc = await self._egil_source(principal, tenant_id, source_id)
        api_key = "egil_" + secrets.token_urlsafe(32)
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        saved = await self._resave(doc, {**(doc.get("settings") or {}), "api_key_sha256": digest})
        rotated = bool((doc.get("settings") or {}).get("api_key_sha256"))
        await self._audit(principal, tenant_id, "source.api_key", source_id, after={"rotated": rotated})
        return models.EgilApiKey(**self.egil_connection(saved, api_key).model_dump(), api_key=api_key)

    async def revoke_egil_api_key(self, principal: Principal, tenant_id: str, source_id: str) -> None:
        doc = await self._egil_source(principal, tenant_id, source_id)
        settings = {k: v for k, v in (doc.get("settings") or {}).items() if k != "api_key_sha256"}
        await self._resave(doc, settings)
        await self._audit(principal, tenant_id, "source.api_key_revoked", source_id)

    async def add_egil_certificate(
        self, principal: Principal, tenant_id: str, source_id: str, pem: str
    ) -> models.EgilConnection:
        """The client certificate's public-key pin is registered, and the certificate itself (public): the
        receiver's own TLS trusts it as its own issuer, so a self-signed certificate needs no CA."""
        doc = await self._egil_source(principal, tenant_id, source_id)
        try:
            certificate = first_certificate_pem(pem.strip().encode())
            pin = spki_sha256_pin(certificate.encode())
        except (ValueError, UnicodeEncodeError):
            raise Invalid(
                "not a PEM certificate", errors=[{"field": "pem", "message": "not a PEM certificate"}]
            ) from None
        settings = dict(doc.get("settings") or {})
        pins = list(settings.get("client_pins") or [])
        if pin not in pins:
            pins.append(pin)
        settings["client_pins"] = pins
        kept = [c for c in settings.get("client_certificates") or [] if spki_sha256_pin(c.encode()) != pin]
        if len(kept) >= MAX_CLIENT_CERTIFICATES:
            message = f"at most {MAX_CLIENT_CERTIFICATES} client certificates: remove an old one first"
            raise Invalid(message, errors=[{"field": "pem", "message": message}])
        settings["client_certificates"] = [*kept, certificate]
        saved = await self._resave(doc, settings)
        await self._audit(principal, tenant_id, "source.certificate", source_id, after={"pin": pin})
        return self.egil_connection(saved)

    async def remove_egil_certificate(self, principal: Principal, tenant_id: str, source_id: str, pin: str) -> None:
        doc = await self._egil_source(principal, tenant_id, source_id)
        settings = dict(doc.get("settings") or {})
        pins = [p for p in settings.get("client_pins") or [] if p != pin]
        certificates = [c for c in settings.get("client_certificates") or [] if spki_sha256_pin(c.encode()) != pin]
        if len(pins) + len(certificates) == len(settings.get("client_pins") or []) + len(
            settings.get("client_certificates") or []
        ):
            raise NotFound("no such certificate pin")
        settings["client_pins"] = pins
        settings["client_certificates"] = certificates
        await self._resave(doc, settings)
        await self._audit(principal, tenant_id, "source.certificate_removed", source_id, before={"pin": pin})

    async def runs(self, principal: Principal, tenant_id: str, source_id: str | None = None) -> list[Document]:
        await self._tenant(principal, tenant_id)
        return await self.history.source_runs(tenant_id, source_id=source_id)

    async def runs_page(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        source_id: str | None = None,
        search: str = "",
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[Document], int]:
        """One page of the sources' runs, newest first (``search``: part of the source's id) and how many
        there are in all."""
        await self._tenant(principal, tenant_id)
        runs = await self.history.source_runs(tenant_id, source_id=source_id, search=search, skip=skip, limit=limit)
        return runs, await self.history.runs.count(tenant_id, source_id=source_id, search=search)
