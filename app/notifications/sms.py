"""SMS text and transports: encoding and segment counting, fitting a message in one segment, phone
numbers, and the two backends (files for the embedded default and tests; Africa's Talking's HTTP API).
No database access here: app/notifications/sms_services.py owns the outbox rows.

Segments (3GPP TS 23.038 / 23.040): a text in the GSM 7-bit alphabet fits 160 septets in one SMS, 153 per
part when split (the rest carries the concatenation header); characters of the extension table (€ [ ] { }
^ ~ | \\ and form feed) take two septets, and an escape pair is never split across parts. Anything else
is sent as UCS-2: 70 UTF-16 code units in one SMS, 67 per part, a surrogate pair never split.
"""

import json
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import requests

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = "^{}\\[~]|€\f"
_BASIC, _EXT = frozenset(GSM7_BASIC), frozenset(GSM7_EXTENSION)
# Typography that phones and word processors put in names and notes, and its GSM 7-bit twin.
_PLAIN = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "‛": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "–": "-",
        "—": "-",
        "…": "...",
        "\u00a0": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\t": " ",
    }
)


@dataclass(frozen=True)
class Encoded:
    text: str
    encoding: str  # gsm7 or ucs2
    units: int  # septets (gsm7) or UTF-16 code units (ucs2)
    segments: int


def is_gsm7(text: str) -> bool:
    return all(c in _BASIC or c in _EXT for c in text)


def to_gsm7(text: str) -> str:
    """The text with typographic quotes, dashes and accents a GSM 7-bit phone lacks made plain, where
    that is all that keeps it from GSM 7-bit (so it costs one segment, not UCS-2's three)."""
    text = text.translate(_PLAIN)
    out = []
    for c in text:
        if c in _BASIC or c in _EXT:
            out.append(c)
            continue
        plain = "".join(d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d))
        out.append(plain if plain and is_gsm7(plain) else c)
    return "".join(out)


def _parts(costs: list[int], single: int, per_part: int) -> int:
    total = sum(costs)
    if total <= single:
        return 1 if total else 0
    parts, used = 1, 0
    for cost in costs:  # a character (an escape pair, a surrogate pair) is never split across parts
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def encode(text: str) -> Encoded:
    text = to_gsm7(text)
    if is_gsm7(text):
        costs = [2 if c in _EXT else 1 for c in text]
        return Encoded(text, "gsm7", sum(costs), _parts(costs, 160, 153))
    costs = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return Encoded(text, "ucs2", sum(costs), _parts(costs, 70, 67))


def fit(*variants: str) -> Encoded:
    """The first variant (longest, most helpful first) that fits one segment; else the last one."""
    encoded = None
    for text in variants:
        encoded = encode(" ".join(text.split()))
        if encoded.segments <= 1:
            return encoded
    assert encoded is not None, "fit() needs at least one variant"
    return encoded


def e164(raw: str | None, default_country_code: str = "254") -> str | None:
    """+254712345678 from "+254 712 345 678", "0712345678", "254712345678"; None if not a phone number."""
    digits = re.sub(r"[\s\-().]", "", raw or "")
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+"):
        number = digits[1:]
    elif digits.startswith("0"):
        number = default_country_code + digits[1:]
    elif digits.startswith(default_country_code):
        number = digits
    else:
        return None
    return f"+{number}" if number.isdigit() and 8 <= len(number) <= 15 else None


# --------------------------------------------------------------------------------------------------
# Transports: `with sms_transport_for(config) as t: t.send(outbox_id, to, text)` -> (message id, cost)
# --------------------------------------------------------------------------------------------------


class PermanentSmsError(Exception):
    """The provider refused this message for good (bad number, blacklisted): the row is marked failed."""


class TransientSmsError(Exception):
    """This message failed for now: retry later with backoff."""


class ConnectionSmsError(Exception):
    """The provider cannot be reached, or refuses our account: the rest of the batch would fail too."""


class FileSmsTransport:
    """SMS_DIR/<outbox id>.json per message; sending a row again overwrites its one file."""

    def __init__(self, config):
        self.directory = Path(config["SMS_DIR"])

    def __enter__(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        return None

    def send(self, outbox_id, to, text):
        data = json.dumps({"id": outbox_id, "to": to, "message": text}, ensure_ascii=False).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.directory / f"sms-{outbox_id}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return f"file-{outbox_id}", None


# Africa's Talking recipient statusCode values: 100 Processed, 101 Sent, 102 Queued are accepted.
AT_ACCEPTED = {100, 101, 102}
AT_PERMANENT = {403, 404, 406}  # InvalidPhoneNumber, UnsupportedNumberType, UserInBlacklist


class AfricasTalkingTransport:
    """POST {AT_BASE_URL}/version1/messaging (form: username, to, message[, from]; header apiKey)."""

    def __init__(self, config):
        self.url = config["AT_BASE_URL"].rstrip("/") + "/version1/messaging"
        self.username, self.api_key = config.get("AT_USERNAME"), config.get("AT_API_KEY")
        self.sender = config.get("AT_SENDER_ID")
        self.timeout = float(config.get("SMS_TIMEOUT") or 10)
        if not self.username or not self.api_key:
            raise ConnectionSmsError("SMS_BACKEND is africastalking but AT_USERNAME or AT_API_KEY is not set")
        self.http = requests.Session()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.http.close()

    def send(self, outbox_id, to, text):
        form = {"username": self.username, "to": to, "message": text}
        if self.sender:
            form["from"] = self.sender
        try:
            resp = self.http.post(
                self.url,
                data=form,
                headers={"apiKey": self.api_key, "Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise ConnectionSmsError(f"Africa's Talking unreachable: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 401:
            raise ConnectionSmsError("Africa's Talking refused the credentials (401)")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise TransientSmsError(f"Africa's Talking answered {resp.status_code}")
        try:
            recipients = resp.json()["SMSMessageData"]["Recipients"]
        except (ValueError, KeyError, TypeError):
            raise TransientSmsError(
                f"Africa's Talking answered {resp.status_code}: {resp.text[:200]!r}"
            ) from None
        if not recipients:
            raise PermanentSmsError(f"Africa's Talking sent to nobody: {resp.text[:200]!r}")
        r = recipients[0]
        code = int(r.get("statusCode") or 0)
        if code in AT_ACCEPTED:
            return str(r.get("messageId") or ""), r.get("cost")
        error = f"Africa's Talking: {code} {r.get('status')}"
        if code in AT_PERMANENT:
            raise PermanentSmsError(error)
        raise TransientSmsError(error)


def sms_transport_for(config):
    backend = config.get("SMS_BACKEND") or "file"
    if backend == "file":
        return FileSmsTransport(config)
    if backend == "africastalking":
        return AfricasTalkingTransport(config)
    raise ConnectionSmsError(f"unknown SMS_BACKEND {backend!r} (africastalking or file)")
