"""The vendor catalogue: the real files in deploy/vendors load and say sensible things, and a broken
file fails with an error that names the file and the field."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trustme
import yaml

from skolsynk.catalogue import (
    CatalogueError,
    DeliveryMode,
    ScimAuth,
    VendorCatalogueEntry,
    VendorSupport,
    load_catalogue,
    load_entry,
)
from skolsynk.domain.ss12000 import VENDOR_KINDS, EntityKind
from skolsynk.domain.subscription import OPTIONAL_FIELDS, SENSITIVE_FIELDS
from skolsynk.messaging.vhosts import amqp_url_with_vhost, amqp_user
from skolsynk_services.dispatcher.onboarding import (
    dispatcher_permissions,
    feed_queue_name,
    vendor_permissions,
    vendor_vhost,
)

pytestmark = pytest.mark.unit

VENDORS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "vendors"
EXPECTED_VENDORS = {"binogi", "ilt", "gleerups", "ne", "studentlitteratur"}
#: Vendors that may take a sensitive field (SENSITIVE_FIELDS), and which. Adding one is a privacy
#: decision: say why in the vendor's file (a comment next to the field) and add it here in review.
SENSITIVE_ALLOWED: dict[str, set[str]] = {"studentlitteratur": {"civic_no"}}


@pytest.fixture(scope="module")
def catalogue() -> dict[str, VendorCatalogueEntry]:
    return load_catalogue(VENDORS_DIR)


# --- the real catalogue ----------------------------------------------------------------------


def test_the_catalogue_loads_with_the_expected_vendors(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    # Adding a vendor is adding a file: more vendors are fine.
    assert set(catalogue) >= EXPECTED_VENDORS
    assert {p.stem for p in VENDORS_DIR.glob("*.yaml")} == set(catalogue)
    assert not list(VENDORS_DIR.glob("*.yml")), "use .yaml: the loader reads only *.yaml"


def test_file_names_are_the_vendor_ids(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    for vendor_id, entry in catalogue.items():
        assert (VENDORS_DIR / f"{vendor_id}.yaml").is_file()
        assert entry.vendor_id == entry.profile.vendor_id == vendor_id


def test_every_scim_vendor_has_scim_settings_on_a_fictional_https_host(
    catalogue: dict[str, VendorCatalogueEntry],
) -> None:
    scim_vendors = [e for e in catalogue.values() if e.delivery is DeliveryMode.EGIL_SCIM]
    assert len(scim_vendors) >= 3
    for entry in scim_vendors:
        assert entry.scim is not None, entry.vendor_id
        url = urlsplit(entry.scim.base_url)
        assert url.scheme == "https", entry.vendor_id
        assert (url.hostname or "").endswith(".example"), f"{entry.vendor_id}: use a reserved .example host"


def test_queue_vendors_have_no_scim_section(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    queue_vendors = [e for e in catalogue.values() if e.delivery is DeliveryMode.QUEUE]
    assert "ne" in [e.vendor_id for e in queue_vendors]
    for entry in queue_vendors:
        assert entry.scim is None, entry.vendor_id


def test_queue_vendors_get_a_feed_queue_only_they_can_read(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    queue_vendors = [e.vendor_id for e in catalogue.values() if e.delivery is DeliveryMode.QUEUE]
    for vendor_id in queue_vendors:
        permissions = vendor_permissions("skolsynk", vendor_id)
        assert (permissions.configure, permissions.write) == ("^$", "^$")
        assert re.fullmatch(permissions.read, feed_queue_name("skolsynk", vendor_id))
        for other in catalogue:
            if other != vendor_id:
                assert not re.search(permissions.read, feed_queue_name("skolsynk", other))
        assert not re.search(permissions.read, feed_queue_name("skolsynk", vendor_id) + ".dlq")
        assert not re.search(permissions.read, feed_queue_name("skolsynk", vendor_id) + "-2")
        assert not re.search(permissions.read, "skolsynk.vendor-feedXne")  # the dots are escaped
        # Its per-organiser feeds (feed_per_organiser) too, and no other vendor's.
        assert re.fullmatch(permissions.read, feed_queue_name("skolsynk", vendor_id, "kommun-a"))
        for other in catalogue:
            if other != vendor_id:
                assert not re.search(permissions.read, feed_queue_name("skolsynk", other, "kommun-a"))
        assert not re.search(permissions.read, feed_queue_name("skolsynk", vendor_id, "kommun-a") + ".dlq")
        assert not re.search(permissions.read, feed_queue_name("skolsynk", vendor_id) + ".kommun-a")


def test_each_queue_vendor_has_a_vhost_of_its_own(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    """Issue 19: no two vendors (nor the system, nor another installation's namespace) share a feed's vhost,
    and the dispatcher's URL to it keeps its own credentials, host and query."""
    queue_vendors = [e.vendor_id for e in catalogue.values() if e.delivery is DeliveryMode.QUEUE]
    vhosts = {vendor_vhost("skolsynk", v) for v in queue_vendors} | {vendor_vhost("other", v) for v in queue_vendors}
    assert len(vhosts) == 2 * len(queue_vendors)
    assert vendor_vhost("skolsynk", "ne") == "skolsynk-vendor-ne"
    system = "amqps://dispatcher:p%40ss@rabbit.example:5671/skolsynk?heartbeat=10"
    url = amqp_url_with_vhost(system, "skolsynk-vendor-ne")
    assert url == "amqps://dispatcher:p%40ss@rabbit.example:5671/skolsynk-vendor-ne?heartbeat=10"
    assert amqp_user(url) == "dispatcher"
    assert amqp_user("amqp://rabbit.example/") == "guest"
    # The dispatcher's rights there: the vendor's feeds only, and publishing through the default exchange.
    allowed = dispatcher_permissions("skolsynk", "ne")
    assert re.fullmatch(allowed.configure, feed_queue_name("skolsynk", "ne", "kommun-a"))
    assert not re.search(allowed.configure, feed_queue_name("skolsynk", "ne") + ".dlq")
    assert re.fullmatch(allowed.write, "amq.default")
    assert not re.search(allowed.write, "amq.topic")


def _walk(node: object, path: str = "") -> list[tuple[str, object]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{path}.{key}" if path else str(key))]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in _walk(value, f"{path}[{i}]")]
    return [(path, node)]


@pytest.mark.parametrize("path", sorted(VENDORS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_secret_values_only_env_names_and_paths(path: Path) -> None:
    vendor_id = path.stem
    text = path.read_text(encoding="utf-8")
    assert "-----BEGIN" not in text, "no PEM material in the catalogue"
    for where, value in _walk(yaml.safe_load(text)):
        leaf = where.rsplit(".", 1)[-1]
        if re.search(r"key|secret|password|token|cert|credential", leaf):
            assert leaf.endswith(("_env", "_file", "_header")), f"{vendor_id}: {where} looks like a secret value"
        if leaf.endswith("_file"):
            assert str(value).startswith(f"/etc/skolsynk/vendors/{vendor_id}/"), f"{vendor_id}: {where}"
        if leaf.endswith("_env"):
            prefix = f"SKOLSYNK_VENDOR_{vendor_id.upper().replace('-', '_')}_"
            assert str(value).startswith(prefix), f"{vendor_id}: {where} should be named {prefix}..."


def test_profiles_only_name_known_fields_of_the_kinds_they_take(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    for entry in catalogue.values():
        profile = entry.profile
        assert set(profile.accepted_fields) <= profile.kinds, f"{entry.vendor_id}: fields for a kind it does not take"
        for kind, fields in profile.accepted_fields.items():
            unknown = fields - OPTIONAL_FIELDS[kind]
            assert not unknown, f"{entry.vendor_id}: unknown {kind.value} fields {sorted(unknown)}"
        assert "security_marking" not in profile.accepted_fields.get(EntityKind.PERSON, frozenset())
        if EntityKind.ACTIVITY in profile.kinds:
            assert EntityKind.DUTY in profile.kinds, f"{entry.vendor_id}: activities refer to teachers' duties"


def test_sensitive_fields_only_where_reviewed_and_the_file_says_why(
    catalogue: dict[str, VendorCatalogueEntry],
) -> None:
    takers: dict[str, set[str]] = {}
    for entry in catalogue.values():
        for fields in entry.profile.accepted_fields.values():
            if fields & SENSITIVE_FIELDS:
                takers.setdefault(entry.vendor_id, set()).update(fields & SENSITIVE_FIELDS)
    assert takers == SENSITIVE_ALLOWED, "a sensitive field needs a reason in the file and review (SENSITIVE_ALLOWED)"
    for vendor_id, taken in takers.items():
        lines = (VENDORS_DIR / f"{vendor_id}.yaml").read_text(encoding="utf-8").splitlines()
        comments = "\n".join(line.split("#", 1)[1] for line in lines if "#" in line)
        for field in taken:
            assert field in comments, f"{vendor_id}.yaml: say in a comment why it takes {field}"
    assert "BankID" in (VENDORS_DIR / "studentlitteratur.yaml").read_text(encoding="utf-8")


def test_the_profiles_differ_meaningfully(catalogue: dict[str, VendorCatalogueEntry]) -> None:
    profiles = {vendor_id: entry.profile for vendor_id, entry in catalogue.items()}
    assert profiles["binogi"].classes_only
    assert profiles["ilt"].single_school_unit_per_user
    without = {v for v, p in profiles.items() if not p.kinds & {EntityKind.ACTIVITY, EntityKind.DUTY}}
    assert "ne" in without
    assert any(p.kinds == frozenset(VENDOR_KINDS) for p in profiles.values()), "one vendor takes the full picture"


# --- broken files ----------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "vendor_id": "acme",
    "display_name": "Acme Läromedel",
    "delivery": "egil_scim",
    "scim": {
        "base_url": "https://scim.acme.example/egil/v1",
        "auth": {
            "client_cert_file": "/etc/skolsynk/vendors/acme/client.crt",
            "client_key_file": "/etc/skolsynk/vendors/acme/client.key",
        },
    },
    "profile": {"kinds": ["organisation", "school_unit", "person", "group"], "classes_only": True},
}


def write(directory: Path, name: str, data: dict[str, Any] | str) -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def broken(**changes: Any) -> dict[str, Any]:
    """VALID with dotted-path changes; a value of None removes the key."""
    data = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for parent in parents:
            node = node[parent]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return data


def test_the_valid_example_loads(tmp_path: Path) -> None:
    entry = load_entry(write(tmp_path, "acme.yaml", VALID))
    assert entry.vendor_id == "acme"
    assert entry.profile.classes_only


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param("vendor_id: [acme\ndelivery: queue\n", r"acme\.yaml: cannot read: ", id="bad-yaml"),
        pytest.param("vendor_id: acme\n  delivery: queue\n", r"acme\.yaml: cannot read: ", id="bad-yaml-indentation"),
        pytest.param(broken(colour="red"), r"acme\.yaml: colour: Extra inputs are not permitted", id="unknown-field"),
        pytest.param(
            broken(scim__auth__password="hunter2"),
            r"acme\.yaml: scim\.auth\.password: Extra inputs are not permitted",
            id="unknown-nested-field",
        ),
        pytest.param(
            broken(profile__colour="red"),
            r"acme\.yaml: profile\.colour: Extra inputs are not permitted",
            id="unknown-profile-field",
        ),
        pytest.param(broken(scim=None), r"acme\.yaml: .*egil_scim needs a scim section", id="scim-without-section"),
        pytest.param(
            broken(scim__auth__client_key_file=None),
            r"acme\.yaml: scim\.auth: .*client_cert_file and client_key_file go together",
            id="cert-without-key",
        ),
        pytest.param(
            broken(scim__auth={"ca_file": "/etc/skolsynk/vendors/acme/ca.pem", "ca_pem": "x"}),
            r"acme\.yaml: scim\.auth: .*ca_file or as ca_pem, not both",
            id="ca-twice",
        ),
        pytest.param(
            broken(profile__kinds=["person", "pupil"]),
            r"acme\.yaml: profile\.kinds\.1: Input should be 'organisation'",
            id="profile-unknown-kind",
        ),
        pytest.param(
            broken(profile__accepted_fields={"classroom": ["display_name"]}),
            r"acme\.yaml: profile\.accepted_fields\.classroom\.\[key\]: Input should be 'organisation'",
            id="accepted-fields-unknown-kind",
        ),
        pytest.param(
            broken(delivery="ftp"), r"acme\.yaml: delivery: Input should be 'egil_scim' or 'queue'", id="mode"
        ),
        pytest.param("", r"acme\.yaml: \(file\): Input should be a valid dictionary", id="empty-file"),
    ],
)
def test_a_broken_file_names_the_file_and_the_field(tmp_path: Path, data: dict[str, Any] | str, expected: str) -> None:
    path = write(tmp_path, "acme.yaml", data)
    with pytest.raises(CatalogueError, match=expected):
        load_entry(path)
    with pytest.raises(CatalogueError, match=expected):
        load_catalogue(tmp_path)


def test_the_file_must_be_named_after_its_vendor(tmp_path: Path) -> None:
    write(tmp_path, "acme-ab.yaml", VALID)
    with pytest.raises(
        CatalogueError, match=r"acme-ab\.yaml: the file must be named after its vendor_id \(acme\.yaml\)"
    ):
        load_catalogue(tmp_path)


def test_one_broken_file_fails_the_whole_catalogue(tmp_path: Path) -> None:
    write(tmp_path, "acme.yaml", VALID)
    write(tmp_path, "other.yaml", broken(vendor_id="other", scim=None))
    with pytest.raises(CatalogueError, match=r"^other\.yaml: "):
        load_catalogue(tmp_path)


def test_a_queue_vendor_needs_no_scim_section(tmp_path: Path) -> None:
    entry = load_entry(write(tmp_path, "acme.yaml", broken(delivery="queue", scim=None)))
    assert entry.delivery is DeliveryMode.QUEUE
    assert entry.scim is None


def test_a_scim_entry_may_have_no_shared_credential_and_an_inline_ca() -> None:
    """Vendors entered in the admin need no file on the dispatcher: the CA inline, and no shared credential
    (organisers then need their own)."""
    ca = trustme.CA().cert_pem.bytes().decode()
    auth = ScimAuth.model_validate({"ca_pem": ca})
    assert (auth.shared_credential, auth.ca_pem) == (False, ca)
    assert ScimAuth.model_validate({"api_key_env": "VENDOR_KEY"}).shared_credential
    with pytest.raises(ValueError, match="not a PEM certificate bundle"):
        ScimAuth.model_validate({"ca_pem": "inte ett certifikat"})
    with pytest.raises(ValueError, match="not both"):
        ScimAuth.model_validate({"ca_pem": ca, "ca_file": "/etc/ssl/ca.pem"})


def test_a_vendors_support_desk_is_checked() -> None:
    support = VendorSupport.model_validate({"email": "support@leverantor.example", "phone": "+46 8 123 45 67"})
    assert support.url is None
    for wrong in ({"email": "inte-en-adress"}, {"url": "ftp://x"}, {"phone": "ring mig"}):
        with pytest.raises(ValueError, match="String should match pattern"):
            VendorSupport.model_validate(wrong)
