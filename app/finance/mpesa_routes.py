"""M-Pesa: the school's Daraja account, STK pushes, paybill payments and their suspense list, and the
callbacks Daraja posts (public: the school's unguessable path is the credential). app/finance/mpesa.py
holds the rules; docs/PAYMENTS.md the flows."""

import logging

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from app.access.rules import STUDENTS, scope_students
from app.core.auth import SCHOOL, public, roles
from app.core.crud import commit_or_conflict
from app.core.errors import ApiError
from app.core.openapi import doc
from app.core.pagination import Filter, ListSpec, list_response
from app.core.queryargs import one_of
from app.core.schemas import dump, fields_of, json_body, parse_body
from app.extensions import db
from app.finance import mpesa
from app.finance.models import C2B_STATUSES, STK_STATUSES, C2bPayment, StkRequest
from app.finance.schemas import (
    AssignIn,
    DarajaAnswer,
    DarajaCallback,
    MpesaAccountIn,
    MpesaAccountOut,
    PaybillPaymentOut,
    StkPushIn,
    StkRequestOut,
    money,
)

bp = Blueprint("mpesa", __name__)
log = logging.getLogger("schoolhouse.mpesa")

PAYERS = ("admin", "accountant", "guardian")
READ = ("admin", "accountant", "guardian", "student")
STAFF = ("admin", "accountant")
TOKEN = {"token": {"type": "string", "minLength": 1, "maxLength": 64}}

_STK_FIELDS = tuple(f for f in fields_of(StkRequestOut) if f != "amount")
_C2B_FIELDS = tuple(f for f in fields_of(PaybillPaymentOut) if f != "amount")


def stk_out(row):
    return {**dump(row, _STK_FIELDS), "amount": money(row.amount_minor)}


def c2b_out(row):
    return {**dump(row, _C2B_FIELDS), "amount": money(row.amount_minor)}


# -- the school's account ------------------------------------------------------------------------------


@bp.get("/mpesa-account")
@roles("admin", reach=SCHOOL)
@doc(
    "The school's M-Pesa (Daraja) account, secrets left out, with its callback URLs (404: none is set)",
    out=MpesaAccountOut,
    errors=(404,),
    tags=["mpesa"],
)
def get_account():
    return jsonify(mpesa.account_out(mpesa.account_or_404()))


@bp.put("/mpesa-account")
@roles("admin", reach=SCHOOL)
@doc(
    "Set the school's M-Pesa (Daraja) account; the secrets are stored encrypted",
    body=MpesaAccountIn,
    out=MpesaAccountOut,
    tags=["mpesa"],
)
def put_account():
    row = mpesa.save_account(parse_body(MpesaAccountIn).model_dump())
    commit_or_conflict()
    return jsonify(mpesa.account_out(row))


# -- STK push ------------------------------------------------------------------------------------------


@bp.post("/payments/mpesa/stk")
@roles(*PAYERS, reach=STUDENTS)
@doc(
    "Ask the payer's phone to pay an invoice (M-Pesa STK push); the request stays pending until M-Pesa "
    "reports how it ended (GET /stk-requests/{ident})",
    body=StkPushIn,
    out=StkRequestOut,
    status=201,
    errors=(404, 502),
    description="An invoice the caller cannot reach (another family's, another school's) is a 404.",
    tags=["mpesa"],
)
def stk_push():
    row = mpesa.start_stk(parse_body(StkPushIn).model_dump(), g.principal)
    commit_or_conflict()
    return jsonify(stk_out(row)), 201


STK_SPEC = ListSpec(
    StkRequest.id,
    filters={
        "invoice_id": StkRequest.invoice_id,
        "student_id": StkRequest.student_id,
        "status": Filter(one_of(*STK_STATUSES), lambda stmt, v: stmt.where(StkRequest.status == v)),
    },
)


@bp.get("/stk-requests")
@roles(*READ, reach=STUDENTS)
@doc("List M-Pesa STK push requests", out=StkRequestOut, many=True, tags=["mpesa"], query=STK_SPEC)
def list_stk_requests():
    stmt = scope_students(select(StkRequest), g.principal, column=StkRequest.student_id)
    return list_response(db.session, stmt, STK_SPEC, stk_out)


@bp.get("/stk-requests/<int:ident>")
@roles(*READ, reach=STUDENTS)
@doc("One M-Pesa STK push request and how it ended", out=StkRequestOut, tags=["mpesa"])
def get_stk_request(ident):
    return jsonify(stk_out(mpesa.stk_request_or_404(ident, g.principal)))


# -- paybill payments and the suspense list ---------------------------------------------------------------

C2B_SPEC = ListSpec(
    C2bPayment.id,
    filters={
        "status": Filter(one_of(*C2B_STATUSES), lambda stmt, v: stmt.where(C2bPayment.status == v)),
        "student_id": C2bPayment.student_id,
    },
)


@bp.get("/paybill-payments")
@roles(*STAFF, reach=SCHOOL)
@doc(
    "List paybill (C2B) payments; status=suspense: those whose account number named no invoice or student",
    out=PaybillPaymentOut,
    many=True,
    tags=["mpesa"],
    query=C2B_SPEC,
)
def list_paybill_payments():
    return list_response(db.session, select(C2bPayment), C2B_SPEC, c2b_out)


@bp.post("/paybill-payments/<int:ident>/assign")
@roles(*STAFF, reach=SCHOOL)
@doc(
    "Put a payment from the suspense list on an invoice (recorded as a payment then)",
    body=AssignIn,
    out=PaybillPaymentOut,
    tags=["mpesa"],
)
def assign_paybill_payment(ident):
    row = mpesa.assign_suspense(mpesa.c2b_or_404(ident), parse_body(AssignIn).invoice_id, g.principal)
    commit_or_conflict()
    return jsonify(c2b_out(row))


# -- Daraja's callbacks (public: the path's token names the school) ----------------------------------------


def _hook(token, handle):
    mpesa.enter_hook(token, request.remote_addr)
    payload = json_body()
    try:
        outcome = handle(payload)
        db.session.commit()
    except ApiError as exc:
        db.session.rollback()
        log.warning("M-Pesa callback refused: %s", exc.detail)
        raise
    return outcome


@bp.post("/pay/hooks/<token>/stk")
@public
@doc(
    "M-Pesa's STK push callback (Body.stkCallback); recorded once however often it comes",
    body=DarajaCallback,
    out=DarajaAnswer,
    path=TOKEN,
    errors=(403,),
    tags=["mpesa-callbacks"],
)
def stk_hook(token):
    outcome = _hook(token, mpesa.stk_callback)
    log.info("M-Pesa STK callback: %s", outcome)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@bp.post("/pay/hooks/<token>/validation")
@public
@doc(
    "M-Pesa's paybill validation: every well-formed payment is accepted",
    body=DarajaCallback,
    out=DarajaAnswer,
    path=TOKEN,
    errors=(403,),
    tags=["mpesa-callbacks"],
)
def c2b_validation_hook(token):
    mpesa.enter_hook(token, request.remote_addr)
    return jsonify(mpesa.c2b_validation(json_body()))


@bp.post("/pay/hooks/<token>/confirmation")
@public
@doc(
    "M-Pesa's paybill confirmation: recorded once per TransID, on the invoice its account number names "
    "or in suspense",
    body=DarajaCallback,
    out=DarajaAnswer,
    path=TOKEN,
    errors=(403,),
    tags=["mpesa-callbacks"],
)
def c2b_confirmation_hook(token):
    outcome = _hook(token, mpesa.c2b_confirmation)
    log.info("M-Pesa paybill confirmation: %s", outcome)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})
