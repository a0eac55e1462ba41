"""What a delivery failure code (``skolsynk.storage.delivery_health``) means, in Swedish for the
organiser's admin and in English for the API and operators; never anything the vendor wrote."""

from __future__ import annotations

from typing import NamedTuple


class DeliveryErrorText(NamedTuple):
    sv: str
    en: str


TEXTS: dict[str, DeliveryErrorText] = {
    "timeout": DeliveryErrorText(
        "Leverantörens server svarade inte i tid.", "The vendor's server did not answer in time."
    ),
    "connection": DeliveryErrorText(
        "Det gick inte att ansluta till leverantörens server.", "The vendor's server could not be reached."
    ),
    "tls": DeliveryErrorText(
        "Den krypterade anslutningen till leverantören misslyckades (certifikat eller TLS).",
        "The TLS connection to the vendor failed (certificate or handshake).",
    ),
    "pin_mismatch": DeliveryErrorText(
        "Leverantörens servercertifikat stämmer inte med den registrerade nyckeln (pin).",
        "The vendor's server certificate does not match the registered key pin.",
    ),
    "no_credentials": DeliveryErrorText(
        "Huvudmannen har inga egna inloggningsuppgifter hos leverantören än (en driftoperatör lägger in dem).",
        "The organiser has no credentials of its own at the vendor yet (an operator sets them).",
    ),
    "own_credentials_unusable": DeliveryErrorText(
        "Huvudmannens egna inloggningsuppgifter hos leverantören går inte att använda (sparade med en annan "
        "nyckel eller skadade); en driftoperatör lägger in dem igen. Ändringarna väntar.",
        "The organiser's own credentials at the vendor cannot be used (sealed with another key, or damaged); "
        "an operator sets them again. The changes wait.",
    ),
    "feed_vhost_missing": DeliveryErrorText(
        "Leverantörens kö är inte upprättad än (en driftoperatör ansluter leverantören); ändringarna väntar.",
        "The vendor's feed is not set up yet (an operator onboards the vendor); the changes wait.",
    ),
    "feed_unavailable": DeliveryErrorText(
        "Ändringar kunde inte läggas i leverantörens kö just nu; de försöks igen.",
        "Changes could not be put into the vendor's feed just now; they are tried again.",
    ),
    "http_429": DeliveryErrorText(
        "Leverantören bad skolsynk att vänta (för många anrop).", "The vendor asked skolsynk to slow down (429)."
    ),
}


def error_text(code: str | None) -> DeliveryErrorText | None:
    """The texts of ``code``; a 5xx status as the vendor's server failing; ``None`` for no code."""
    if code is None:
        return None
    if code in TEXTS:
        return TEXTS[code]
    if code.startswith("http_5"):
        status = code.removeprefix("http_")
        return DeliveryErrorText(
            f"Leverantörens server svarade med ett fel ({status}).",
            f"The vendor's server answered with an error ({status}).",
        )
    return DeliveryErrorText(f"Leveransen misslyckades ({code}).", f"Delivery failed ({code}).")
