"""Safaricom's Daraja API, as this app calls it: OAuth token, STK push, STK query, C2B URL registration.

Plain HTTP with `requests` (no SDK: the four calls are small and documented). No database access: the
services in app/finance/mpesa.py decide what a result means for the school's records.
"""

import base64
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import requests

BASE_URLS = {"sandbox": "https://sandbox.safaricom.co.ke", "production": "https://api.safaricom.co.ke"}
NAIROBI = ZoneInfo("Africa/Nairobi")  # Daraja's timestamps are East Africa Time
STILL_PROCESSING = "500.001.1001"  # STK query: the customer has not answered yet


class DarajaError(Exception):
    """Daraja refused a call or could not be reached. `code` is Daraja's errorCode when it sent one."""

    def __init__(self, message, code=None, status=None):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(frozen=True)
class Credentials:
    base_url: str
    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    transaction_type: str = "CustomerPayBillOnline"


def timestamp(now: datetime | None = None) -> str:
    return (now or datetime.now(NAIROBI)).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def password(shortcode: str, passkey: str, stamp: str) -> str:
    """Daraja's STK Password: base64(shortcode + passkey + timestamp)."""
    return base64.b64encode(f"{shortcode}{passkey}{stamp}".encode()).decode()


def parse_timestamp(value) -> datetime | None:
    """20240131154500 (Nairobi time, as Daraja writes TransactionDate and TransTime) -> aware datetime."""
    try:
        return datetime.strptime(str(value), "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except (TypeError, ValueError):
        return None


class Client:
    def __init__(self, creds: Credentials, timeout: float = 15):
        self.creds, self.timeout = creds, timeout
        self._token: str | None = None

    def _call(self, method, path, **kw):
        url = self.creds.base_url.rstrip("/") + path
        try:
            resp = requests.request(method, url, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise DarajaError(f"Daraja could not be reached: {type(exc).__name__}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if resp.status_code >= 400 or "errorCode" in body:
            raise DarajaError(
                body.get("errorMessage") or f"Daraja answered {resp.status_code}",
                code=body.get("errorCode"),
                status=resp.status_code,
            )
        return body

    def token(self) -> str:
        if self._token is None:
            body = self._call(
                "GET",
                "/oauth/v1/generate",
                params={"grant_type": "client_credentials"},
                auth=(self.creds.consumer_key, self.creds.consumer_secret),
            )
            if not body.get("access_token"):
                raise DarajaError("Daraja gave no access token")
            self._token = body["access_token"]
        return self._token

    def _post(self, path, payload):
        return self._call("POST", path, json=payload, headers={"Authorization": f"Bearer {self.token()}"})

    def _signed(self):
        stamp = timestamp()
        c = self.creds
        return {
            "BusinessShortCode": c.shortcode,
            "Password": password(c.shortcode, c.passkey, stamp),
            "Timestamp": stamp,
        }

    def stk_push(
        self, *, phone: str, amount: int, account_reference: str, description: str, callback_url: str
    ):
        c = self.creds
        body = self._post(
            "/mpesa/stkpush/v1/processrequest",
            {
                **self._signed(),
                "TransactionType": c.transaction_type,
                "Amount": amount,
                "PartyA": phone,
                "PartyB": c.shortcode,
                "PhoneNumber": phone,
                "CallBackURL": callback_url,
                "AccountReference": account_reference[:12],
                "TransactionDesc": description[:13],
            },
        )
        if str(body.get("ResponseCode")) != "0" or not body.get("CheckoutRequestID"):
            raise DarajaError(body.get("ResponseDescription") or "Daraja did not accept the push")
        return body

    def stk_query(self, checkout_request_id: str):
        return self._post(
            "/mpesa/stkpushquery/v1/query", {**self._signed(), "CheckoutRequestID": checkout_request_id}
        )

    def register_urls(self, *, confirmation_url: str, validation_url: str, response_type: str = "Completed"):
        return self._post(
            "/mpesa/c2b/v1/registerurl",
            {
                "ShortCode": self.creds.shortcode,
                "ResponseType": response_type,
                "ConfirmationURL": confirmation_url,
                "ValidationURL": validation_url,
            },
        )
