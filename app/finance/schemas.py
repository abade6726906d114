"""Finance bodies and answers. Money travels as decimal strings with two decimals ("1500.00") in the
institution's currency and is held as integer minor units (cents): parsed with exact text rules,
never through float."""

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.core.schemas import Body, Out, rule
from app.finance.models import PAYMENT_METHODS

_MONEY = re.compile(r"(-?)(\d+)(?:\.(\d+))?")
MAX_MINOR = 10**15  # ten trillion in major units: far above any school fee, far below BIGINT


def _money_error(message):
    return PydanticCustomError("money", message)


def to_minor(value, *, positive: bool) -> int:
    """'1500.00' / '1500.5' / 1500 -> minor units. Floats are refused: 0.1 + 0.2 is not money."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _money_error('must be a decimal string such as "1500.00"')
    match = _MONEY.fullmatch(str(value).strip())
    if match is None:
        raise _money_error('must be a decimal string such as "1500.00"')
    sign, whole, frac = match.groups()
    frac = frac or ""
    if len(frac) > 2:
        raise _money_error("must have at most 2 decimal places")
    minor = int(whole) * 100 + int(frac.ljust(2, "0"))
    if sign:
        minor = -minor
    if positive and minor <= 0:
        raise _money_error("must be greater than zero")
    if minor < 0:
        raise _money_error("must not be negative")
    if minor >= MAX_MINOR:
        raise _money_error("is too large")
    return minor


def money(minor: int | None) -> str | None:
    """Minor units -> '1500.00' (exact integer arithmetic; negative amounts keep their sign)."""
    if minor is None:
        return None
    whole, cents = divmod(abs(int(minor)), 100)
    return f"{'-' if minor < 0 else ''}{whole}.{cents:02d}"


_WHOLE = len(str(MAX_MINOR // 100)) - 1  # digits before the point


def _money_schema(positive: bool) -> dict:
    """What to_minor takes: a decimal string with at most 2 decimals, or an integer (major units)."""
    fraction = "(\\.[0-9]{1,2})?"
    text = (
        f"^([1-9][0-9]{{0,{_WHOLE - 1}}}{fraction}|0\\.([1-9][0-9]?|0[1-9]))$"
        if positive
        else f"^(0|[1-9][0-9]{{0,{_WHOLE - 1}}}){fraction}$"
    )
    whole = {"type": "integer", "minimum": 1 if positive else 0, "maximum": MAX_MINOR // 100 - 1}
    return {"anyOf": [{"type": "string", "pattern": text, "examples": ["1500.00"]}, whole]}


# Validated to minor units; documented (OpenAPI) as what clients send.
Money = Annotated[
    int, PlainValidator(lambda v: to_minor(v, positive=False)), WithJsonSchema(_money_schema(False))
]
PositiveMoney = Annotated[
    int, PlainValidator(lambda v: to_minor(v, positive=True)), WithJsonSchema(_money_schema(True))
]
MoneyOut = Annotated[
    str, Field(description="decimal string in the institution's currency", examples=["1500.00"])
]
Method = Literal[PAYMENT_METHODS]
Reference = Annotated[str, Field(min_length=1, max_length=100)]


# -- fee categories ----------------------------------------------------------------------------------


NOT_BOTH = "not together with class_id"


class FeeCategoryCreate(Body):
    term_id: int
    name: str = Field(min_length=1, max_length=100)
    amount_minor: Money = Field(alias="amount")
    grade_level: int | None = Field(
        None,
        ge=0,
        le=20,
        description="bill only students of this grade level",
        json_schema_extra=rule(NOT_BOTH),
    )
    class_id: int | None = Field(None, description="bill only students of this class")
    due_date: date | None = None


class FeeCategoryUpdate(Body):
    read_only = frozenset({"term_id"})
    name: str = Field(None, min_length=1, max_length=100)
    amount_minor: Money = Field(None, alias="amount")
    grade_level: int | None = Field(None, ge=0, le=20, json_schema_extra=rule(NOT_BOTH))
    class_id: int | None = None
    due_date: date | None = None


class FeeCategoryOut(Out):
    id: int
    term_id: int
    name: str
    amount: MoneyOut
    grade_level: int | None
    class_id: int | None
    due_date: date | None
    created_at: datetime
    updated_at: datetime


# -- invoices ------------------------------------------------------------------------------------------


class GenerateIn(Body):
    term_id: int
    class_id: int | None = Field(None, description="one class, or")
    grade_level: int | None = Field(
        None,
        ge=0,
        le=20,
        description="every class of this grade in the term's year",
        json_schema_extra=rule("exactly one of class_id or grade_level"),
    )


class GenerateOut(Out):
    created_invoices: int
    added_lines: int
    invoices: list[int] = Field(description="ids of the invoices created or given new lines")


class VoidIn(Body):
    reason: str | None = Field(None, max_length=500)


class InvoiceOut(Out):
    id: int
    number: str
    student_id: int
    term_id: int
    status: Literal["open", "partially_paid", "paid", "void"]
    total: MoneyOut
    paid: MoneyOut
    outstanding: MoneyOut = Field(description="total - paid, never below zero (any excess is student credit)")
    due_date: date | None
    voided_at: datetime | None
    created_at: datetime
    updated_at: datetime


class InvoiceLineOut(Out):
    id: int
    fee_category_id: int
    description: str
    amount: MoneyOut


class PaymentOut(Out):
    id: int
    student_id: int
    invoice_id: int | None
    amount: MoneyOut = Field(description="negative for refunds and reversals")
    method: str
    reference: str
    kind: Literal["payment", "refund", "reversal"]
    reverses_id: int | None
    note: str | None
    received_at: datetime
    recorded_by_id: int | None
    created_at: datetime


class InvoiceDetailOut(InvoiceOut):
    lines: list[InvoiceLineOut]
    payments: list[PaymentOut]


# -- payments ------------------------------------------------------------------------------------------


class PaymentIn(Body):
    student_id: int
    invoice_id: int | None = Field(None, description="omit for an unallocated payment (student credit)")
    amount: PositiveMoney
    method: Method
    reference: Reference = Field(description="the external transaction reference, unique in the institution")
    received_at: datetime | None = Field(
        None,
        description="default: now; a time without an offset is UTC",
        json_schema_extra=rule("not in the future"),
    )
    note: str | None = Field(None, max_length=500)


class ReverseIn(Body):
    reason: str = Field(min_length=1, max_length=500)
    reference: Reference | None = Field(None, description='default: "REV-" + the payment\'s reference')


class RefundIn(Body):
    amount: PositiveMoney = Field(json_schema_extra=rule("at most the student's credit"))
    method: Method
    reference: Reference
    note: str | None = Field(None, max_length=500)


class BalanceOut(Out):
    student_id: int
    currency: str
    invoiced: MoneyOut
    paid: MoneyOut = Field(description="net of refunds and reversals")
    balance: MoneyOut = Field(description="invoiced - paid; negative means the student is in credit")
    credit: MoneyOut


class PaymentReceiptOut(PaymentOut):
    invoice: InvoiceOut | None
    balance: BalanceOut


class StatementEntryOut(Out):
    date: datetime
    type: Literal["invoice", "payment", "refund", "reversal"]
    id: int
    reference: str
    description: str
    invoice_id: int | None
    debit: MoneyOut
    credit: MoneyOut
    balance: MoneyOut


class StatementOut(Out):
    student_id: int
    currency: str
    from_: date | None = Field(alias="from")
    to: date | None
    opening_balance: MoneyOut
    total_debits: MoneyOut
    total_credits: MoneyOut
    closing_balance: MoneyOut
    entries: list[StatementEntryOut]


# -- M-Pesa (app/finance/mpesa.py) ------------------------------------------------------------------------


class MpesaAccountIn(Body):
    environment: Literal["sandbox", "production", "simulator"] = Field(
        description="Daraja's sandbox, production, or the local simulator (MPESA_SIMULATOR_URL)"
    )
    shortcode: str = Field(pattern=r"^[0-9]{5,7}$", description="the paybill (or till) number")
    transaction_type: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"] = "CustomerPayBillOnline"
    consumer_key: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    consumer_secret: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    passkey: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    new_callback_token: bool = Field(
        False, description="make new callback URLs (register them again: flask mpesa register-urls)"
    )


class MpesaAccountOut(Out):
    environment: str
    shortcode: str
    transaction_type: str
    consumer_key_hint: str | None = Field(description="the key's last 4 characters; secrets are never shown")
    credentials_readable: bool = Field(description="false: stored under another DATA_ENCRYPTION_KEY")
    stk_callback_url: str
    validation_url: str
    confirmation_url: str
    urls_registered_at: datetime | None
    updated_at: datetime


class StkPushIn(Body):
    invoice_id: int
    phone: str = Field(
        min_length=9, max_length=20, description="the payer's M-Pesa number: 0712345678, +254712345678"
    )
    amount: PositiveMoney | None = Field(
        None,
        description="default: what is outstanding on the invoice",
        json_schema_extra=rule("whole shillings, at most the invoice's outstanding amount"),
    )


class StkRequestOut(Out):
    id: int
    invoice_id: int
    student_id: int
    phone: str
    amount: MoneyOut
    checkout_request_id: str
    status: Literal["pending", "paid", "failed", "cancelled", "expired"]
    result_code: int | None
    result_desc: str | None
    receipt_number: str | None
    payment_id: int | None
    settled_by: str | None
    created_at: datetime
    settled_at: datetime | None


class PaybillPaymentOut(Out):
    id: int
    trans_id: str
    trans_time: datetime | None
    amount: MoneyOut
    bill_ref: str = Field(description="the account number the payer typed")
    msisdn: str | None
    payer_name: str | None
    status: Literal["applied", "suspense", "assigned", "duplicate"]
    student_id: int | None
    invoice_id: int | None
    payment_id: int | None
    assigned_at: datetime | None
    created_at: datetime


class AssignIn(Body):
    invoice_id: int


class DarajaAnswer(Out):
    ResultCode: str | int
    ResultDesc: str


class DarajaCallback(BaseModel):
    """Whatever Daraja posts (an STK callback's Body.stkCallback, or a C2B validation/confirmation)."""

    model_config = ConfigDict(extra="allow")
