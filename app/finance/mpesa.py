"""M-Pesa collections through Safaricom's Daraja API: STK push for an invoice, paybill (C2B) payments, the
suspense list, and the settle job for pushes whose callback never came. docs/PAYMENTS.md explains the
flows and settings.

Exactly once. Daraja retries callbacks and may send them late, twice, or in any order, and the STK query
of the settle job may race a late callback. Every path that ends a push goes through `settle_stk`, which
locks the request row (FOR UPDATE, found by its unique CheckoutRequestID) and does nothing when the row is
no longer pending; a paybill confirmation is inserted with ON CONFLICT DO NOTHING on its TransID; and the
ledger's own unique reference (the M-Pesa receipt number) is the last guard. The payment is recorded
through the finance services in the callback's transaction (the same audit rows and cache invalidation
as a payment typed in); receipts to guardians are sent by a task after the commit.

Callbacks carry no signature. They are accepted only on the school's unguessable path (a random token,
`MpesaAccount.callback_token`) and, when MPESA_CALLBACK_ALLOWED_IPS is set, only from those addresses.
"""

import ipaddress
import logging
import re
import secrets
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from flask import current_app
from sqlalchemy import func, select

from app.access.rules import scope_students
from app.audit import services as audit
from app.core.background import enqueue_after_commit
from app.core.crypto import SecretUnreadable, decrypt, encrypt
from app.core.errors import ApiError, Conflict, Forbidden, NotFound, ValidationFailed
from app.core.models import as_utc, utcnow
from app.core.tenancy import current_institution_id, set_current_institution
from app.core.upsert import insert_for
from app.extensions import db
from app.finance import daraja
from app.finance import services as finance
from app.finance.models import C2bPayment, Invoice, MpesaAccount, StkRequest
from app.finance.schemas import money
from app.institutions.models import Institution
from app.people.models import Student

log = logging.getLogger("schoolhouse.mpesa")

RECEIPT_TASK = "tasks.notifications.payment_receipt"  # by name: app/ never imports tasks/
OPEN = ("open", "partially_paid")
CANCELLED = 1032  # "Request cancelled by user"
HOOK_PATH = "/api/v1/pay/hooks/{token}/{kind}"  # no "mpesa" in it: Daraja refuses such URLs
_PHONE = re.compile(r"^(?:\+?254|0)?([17]\d{8})$")


# -- the school's Daraja account ----------------------------------------------------------------------


def account() -> MpesaAccount | None:
    return db.session.execute(select(MpesaAccount)).scalar_one_or_none()


def account_or_404() -> MpesaAccount:
    found = account()
    if found is None:
        raise NotFound("M-Pesa account")
    return found


def save_account(values: dict) -> MpesaAccount:
    """Create or replace the school's Daraja account. Secrets are stored encrypted; the callback token
    is made once and kept (the URLs registered with Safaricom stay valid), unless `new_callback_token`."""
    if values["environment"] == "simulator" and not current_app.config.get("MPESA_SIMULATOR_URL"):
        raise ValidationFailed({"environment": "no simulator is configured here (MPESA_SIMULATOR_URL)"})
    row = account()
    secrets_in = {
        "consumer_key_enc": encrypt(values["consumer_key"]),
        "consumer_secret_enc": encrypt(values["consumer_secret"]),
        "passkey_enc": encrypt(values["passkey"]),
    }
    plain = {k: values[k] for k in ("environment", "shortcode", "transaction_type")}
    if row is None:
        row = MpesaAccount(**plain, **secrets_in, callback_token=secrets.token_urlsafe(32))
        db.session.add(row)
        db.session.flush()
        audit.record("create", "mpesa_account", row.id, audit.snapshot(row, tuple(plain)))
        return row
    for k, v in {**plain, **secrets_in}.items():
        setattr(row, k, v)
    if values.get("new_callback_token"):
        row.callback_token = secrets.token_urlsafe(32)
        row.urls_registered_at = None
    changes = audit.diff(row, (*plain, "urls_registered_at"))
    changes["credentials"] = ["***", "***"]
    audit.record("update", "mpesa_account", row.id, changes)
    return row


def hook_url(row: MpesaAccount, kind: str) -> str:
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    return base + HOOK_PATH.format(token=row.callback_token, kind=kind)


def account_out(row: MpesaAccount) -> dict:
    try:
        key_hint = "..." + decrypt(row.consumer_key_enc)[-4:]
        readable = True
    except SecretUnreadable:
        key_hint, readable = None, False
    return {
        "environment": row.environment,
        "shortcode": row.shortcode,
        "transaction_type": row.transaction_type,
        "consumer_key_hint": key_hint,
        "credentials_readable": readable,
        "stk_callback_url": hook_url(row, "stk"),
        "validation_url": hook_url(row, "validation"),
        "confirmation_url": hook_url(row, "confirmation"),
        "urls_registered_at": row.urls_registered_at,
        "updated_at": row.updated_at,
    }


def client_for(row: MpesaAccount) -> daraja.Client:
    cfg = current_app.config
    if row.environment == "simulator":
        base = cfg.get("MPESA_SIMULATOR_URL")
        if not base:
            raise Conflict(
                "This school's M-Pesa account points at the simulator, which is not configured here."
            )
    else:
        base = daraja.BASE_URLS[row.environment]
    try:
        creds = daraja.Credentials(
            base_url=base,
            consumer_key=decrypt(row.consumer_key_enc),
            consumer_secret=decrypt(row.consumer_secret_enc),
            shortcode=row.shortcode,
            passkey=decrypt(row.passkey_enc),
            transaction_type=row.transaction_type,
        )
    except SecretUnreadable:
        raise Conflict(
            "The stored M-Pesa credentials cannot be read with the current DATA_ENCRYPTION_KEY; enter them again."
        ) from None
    return daraja.Client(creds, timeout=cfg["MPESA_HTTP_TIMEOUT"])


def upstream_error(exc: daraja.DarajaError) -> ApiError:
    return ApiError(502, f"M-Pesa (Daraja) refused the request: {exc}", title="Bad gateway")


def register_urls(row: MpesaAccount) -> dict:
    """Register this school's validation and confirmation URLs for its shortcode (CLI)."""
    try:
        answer = client_for(row).register_urls(
            confirmation_url=hook_url(row, "confirmation"), validation_url=hook_url(row, "validation")
        )
    except daraja.DarajaError as exc:
        raise upstream_error(exc) from None
    row.urls_registered_at = utcnow()
    audit.record("register_urls", "mpesa_account", row.id, audit.diff(row, ("urls_registered_at",)))
    return answer


# -- input ---------------------------------------------------------------------------------------------


def msisdn(raw: str) -> str:
    """A Kenyan mobile number in any usual spelling (0712..., +254 712..., 254712...) -> 254712345678."""
    digits = re.sub(r"[\s\-()]", "", raw or "")
    match = _PHONE.match(digits)
    if match is None:
        raise ValidationFailed({"phone": "must be a Kenyan mobile number, e.g. 0712345678 or +254712345678"})
    return "254" + match.group(1)


def _shillings(amount_minor: int, field="amount") -> int:
    whole, cents = divmod(amount_minor, 100)
    if cents:
        raise ValidationFailed({field: "M-Pesa takes whole shillings only"})
    return whole


def _minor(value) -> int | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount <= 0 or amount >= 10**13:
        return None
    return int((amount * 100).to_integral_value())


# -- STK push ------------------------------------------------------------------------------------------


def start_stk(values: dict, principal) -> StkRequest:
    """Send an STK push for an invoice and record it as pending. The Daraja call is made before anything
    is written: a refused push leaves no row. The caller commits."""
    invoice = finance.invoice_or_404(values["invoice_id"], principal)
    if invoice.status not in OPEN:
        raise ValidationFailed(
            {"invoice_id": f"is {invoice.status.replace('_', ' ')}; nothing is owed on it"}
        )
    outstanding = invoice.total_minor - invoice.paid_minor
    amount = values.get("amount") or outstanding
    if amount > outstanding:
        raise ValidationFailed({"amount": f"exceeds the {money(outstanding)} outstanding on the invoice"})
    shillings = _shillings(amount)
    phone = msisdn(values["phone"])
    currency = db.session.execute(
        select(Institution.currency).where(Institution.id == current_institution_id())
    ).scalar_one()
    if currency != "KES":
        raise ValidationFailed({"invoice_id": f"the school bills in {currency}; M-Pesa collects KES only"})
    row = account()
    if row is None:
        raise Conflict("M-Pesa is not set up for this school (PUT /mpesa-account).")
    client = client_for(row)
    try:
        answer = client.stk_push(
            phone=phone,
            amount=shillings,
            account_reference=invoice.number,
            description="School fees",
            callback_url=hook_url(row, "stk"),
        )
    except daraja.DarajaError as exc:
        raise upstream_error(exc) from None
    request = StkRequest(
        invoice_id=invoice.id,
        student_id=invoice.student_id,
        phone=phone,
        amount_minor=amount,
        merchant_request_id=str(answer.get("MerchantRequestID", ""))[:64],
        checkout_request_id=str(answer["CheckoutRequestID"])[:64],
        status="pending",
        requested_by_id=principal.user_id,
        created_at=utcnow(),
    )
    db.session.add(request)
    db.session.flush()
    audit.record(
        "create",
        "mpesa_stk_request",
        request.id,
        audit.snapshot(request, ("invoice_id", "amount_minor", "checkout_request_id", "status")),
    )
    return request


def stk_request_or_404(ident, principal) -> StkRequest:
    stmt = scope_students(
        select(StkRequest).where(StkRequest.id == ident), principal, column=StkRequest.student_id
    )
    found = db.session.execute(stmt).scalar_one_or_none()
    if found is None:
        raise NotFound("M-Pesa request")
    return found


def settle_stk(
    checkout_request_id, result_code, result_desc, *, receipt=None, amount_minor=None, paid_at=None, by
):
    """End a pending push once: paid (a ledger row against its invoice), cancelled (1032) or failed.
    Returns the request's status afterwards, or None for an unknown CheckoutRequestID. A second call for
    the same push changes nothing (a late callback may still fill in the receipt number)."""
    request = db.session.execute(
        select(StkRequest)
        .where(StkRequest.checkout_request_id == checkout_request_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if request is None:
        return None
    if request.status != "pending":
        if receipt and request.status == "paid" and not request.receipt_number:
            request.receipt_number = receipt
        return request.status
    request.result_code, request.result_desc = result_code, (result_desc or "")[:255]
    request.settled_at, request.settled_by = utcnow(), by
    if result_code == 0:
        # Without a receipt (the STK query does not report it) the push's own id is the reference.
        reference = receipt or checkout_request_id
        existing = finance.payment_by_reference(reference)
        if existing is None:
            payment, _ = finance.record_received(
                request.student_id,
                request.invoice_id,
                amount_minor or request.amount_minor,
                reference,
                paid_at,
                note="M-Pesa STK push" + ("" if receipt else " (confirmed by STK query; no receipt number)"),
            )
            enqueue_after_commit(RECEIPT_TASK, payment.id)
        else:  # the paybill confirmation of the same transaction was recorded first
            payment = existing
        request.status, request.receipt_number, request.payment_id = "paid", receipt, payment.id
    else:
        request.status = "cancelled" if result_code == CANCELLED else "failed"
    audit.record(
        "settle",
        "mpesa_stk_request",
        request.id,
        audit.diff(request, ("status", "result_code", "receipt_number", "payment_id", "settled_by")),
    )
    return request.status


def settle_pending(now=None) -> dict:
    """The settle job: ask Daraja (STK query) about pushes pending longer than MPESA_STK_SETTLE_AFTER, one
    transaction each. A push Daraja still calls "being processed" after MPESA_STK_EXPIRE_AFTER expires."""
    cfg = current_app.config
    now = now or utcnow()
    report = {"checked": 0, "settled": 0, "expired": 0, "errors": 0}
    due = db.session.execute(
        select(
            StkRequest.id, StkRequest.institution_id, StkRequest.checkout_request_id, StkRequest.created_at
        )
        .where(
            StkRequest.status == "pending",
            StkRequest.created_at <= now - timedelta(seconds=cfg["MPESA_STK_SETTLE_AFTER"]),
        )
        .order_by(StkRequest.created_at)
        .limit(500)
        .execution_options(skip_tenant=True)
    ).all()
    db.session.rollback()
    previous = current_institution_id()
    clients: dict = {}
    try:
        for row in due:
            report["checked"] += 1
            set_current_institution(row.institution_id)
            try:
                if row.institution_id not in clients:
                    acct = account()
                    clients[row.institution_id] = client_for(acct) if acct else None
                client = clients[row.institution_id]
                if client is None:
                    continue
                try:
                    answer = client.stk_query(row.checkout_request_id)
                except daraja.DarajaError as exc:
                    if exc.code == daraja.STILL_PROCESSING or exc.status == 500:
                        if as_utc(row.created_at) <= now - timedelta(seconds=cfg["MPESA_STK_EXPIRE_AFTER"]):
                            _expire(row.id)
                            db.session.commit()
                            report["expired"] += 1
                        continue
                    raise
                status = settle_stk(
                    row.checkout_request_id,
                    int(answer.get("ResultCode", -1)),
                    answer.get("ResultDesc"),
                    by="query",
                )
                db.session.commit()
                report["settled"] += status is not None
            except Exception:  # one school's outage must not stop the others
                db.session.rollback()
                report["errors"] += 1
                log.exception("M-Pesa settle: request %s could not be checked", row.id)
    finally:
        set_current_institution(previous)
    if report["checked"]:
        log.info("M-Pesa settle: %s", report)
    return report


def _expire(request_id):
    request = db.session.execute(
        select(StkRequest)
        .where(StkRequest.id == request_id, StkRequest.status == "pending")
        .with_for_update()
    ).scalar_one_or_none()
    if request is not None:
        request.status, request.settled_at, request.settled_by = "expired", utcnow(), "query"
        audit.record("settle", "mpesa_stk_request", request.id, {"status": ["pending", "expired"]})


# -- callbacks -----------------------------------------------------------------------------------------


def enter_hook(token: str, remote_addr: str | None) -> MpesaAccount:
    """The school a callback path names, made the current institution; 404 for a token no school has,
    403 from an address outside MPESA_CALLBACK_ALLOWED_IPS (when set)."""
    allowed = current_app.config.get("MPESA_CALLBACK_ALLOWED_IPS") or []
    if allowed:
        try:
            addr = ipaddress.ip_address(remote_addr or "")
        except ValueError:
            addr = None
        if addr is None or not any(addr in net for net in allowed):
            log.warning("M-Pesa callback refused from %s (not in MPESA_CALLBACK_ALLOWED_IPS)", remote_addr)
            raise Forbidden("Callbacks are accepted only from M-Pesa's addresses.")
    if not token or len(token) > 64:
        raise NotFound("callback")
    row = db.session.execute(
        select(MpesaAccount).where(MpesaAccount.callback_token == token).execution_options(skip_tenant=True)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("callback")
    set_current_institution(row.institution_id)
    return row


def stk_callback(payload) -> str:
    """Body.stkCallback -> settle_stk. Returns what happened, for the log."""
    try:
        cb = payload["Body"]["stkCallback"]
        checkout = str(cb["CheckoutRequestID"])
        code = int(cb["ResultCode"])
    except (KeyError, TypeError, ValueError):
        raise ValidationFailed(
            {"Body": "is not an STK callback (Body.stkCallback with ResultCode)"}
        ) from None
    items = {}
    meta = cb.get("CallbackMetadata") or {}
    for item in (meta.get("Item") or []) if isinstance(meta, dict) else []:
        if isinstance(item, dict) and "Name" in item:
            items[item["Name"]] = item.get("Value")
    receipt = str(items.get("MpesaReceiptNumber") or "")[:30] or None
    if code == 0 and receipt is None:
        raise ValidationFailed({"CallbackMetadata": "a successful callback names its MpesaReceiptNumber"})
    status = settle_stk(
        checkout,
        code,
        str(cb.get("ResultDesc") or ""),
        receipt=receipt,
        amount_minor=_minor(items.get("Amount")),
        paid_at=daraja.parse_timestamp(items.get("TransactionDate")),
        by="callback",
    )
    if status is None:
        # A callback can outrun the commit of its push; the settle job's STK query settles it.
        log.warning("M-Pesa STK callback for an unknown CheckoutRequestID %s", checkout)
    return status or "unknown"


def _c2b_fields(payload) -> dict:
    if not isinstance(payload, dict):
        raise ValidationFailed({"TransID": "is required"})
    errors = {}
    trans_id = str(payload.get("TransID") or "").strip()
    if not trans_id or len(trans_id) > 30:
        errors["TransID"] = "is required (at most 30 characters)"
    amount = _minor(payload.get("TransAmount"))
    if amount is None:
        errors["TransAmount"] = "must be a positive amount"
    if errors:
        raise ValidationFailed(errors)
    names = " ".join(str(payload.get(k) or "").strip() for k in ("FirstName", "MiddleName", "LastName"))
    return {
        "trans_id": trans_id,
        "trans_type": str(payload.get("TransactionType") or "")[:40] or None,
        "trans_time": daraja.parse_timestamp(payload.get("TransTime")),
        "amount_minor": amount,
        "bill_ref": str(payload.get("BillRefNumber") or "").strip()[:100],
        "msisdn": str(payload.get("MSISDN") or "")[:100] or None,
        "payer_name": " ".join(names.split())[:200] or None,
    }


def resolve_account_number(bill_ref: str) -> tuple[int | None, int | None]:
    """(student_id, invoice_id) for a paybill account number: an invoice number (that invoice, unless
    void), or an admission number (that student's oldest open invoice, or none: the student's credit).
    (None, None) when it names neither."""
    ref = (bill_ref or "").strip().upper()
    if not ref:
        return None, None
    invoice = db.session.execute(
        select(Invoice.id, Invoice.student_id, Invoice.status).where(func.upper(Invoice.number) == ref)
    ).first()
    if invoice is not None and invoice.status != "void":
        return invoice.student_id, invoice.id
    student_id = db.session.execute(
        select(Student.id).where(func.upper(Student.admission_number) == ref, Student.deleted_at.is_(None))
    ).scalar_one_or_none()
    if student_id is None:
        return None, None
    oldest = db.session.execute(
        select(Invoice.id)
        .where(Invoice.student_id == student_id, Invoice.status.in_(OPEN))
        .order_by(Invoice.due_date.is_(None), Invoice.due_date, Invoice.created_at, Invoice.id)
        .limit(1)
    ).scalar_one_or_none()
    return student_id, oldest


def c2b_validation(payload) -> dict:
    """Daraja's validation answer. Every well-formed payment is accepted: an account number we do not
    know lands in suspense for an accountant to assign (refusing it would bounce a parent's money)."""
    try:
        _c2b_fields(payload)
    except ValidationFailed:
        return {"ResultCode": "C2B00013", "ResultDesc": "Rejected"}
    return {"ResultCode": "0", "ResultDesc": "Accepted"}


def c2b_confirmation(payload) -> str:
    """Record a paybill payment once per TransID: applied to the invoice its account number names,
    or held in suspense. Returns the row's status ("duplicate" for a repeated confirmation)."""
    fields = _c2b_fields(payload)
    iid = current_institution_id()
    inserted = db.session.execute(
        insert_for(C2bPayment)
        .values(institution_id=iid, status="suspense", created_at=utcnow(), **fields)
        .on_conflict_do_nothing(index_elements=["institution_id", "trans_id"])
        .returning(C2bPayment.id)
    ).scalar_one_or_none()
    if inserted is None:
        return "duplicate"
    row = db.session.execute(
        select(C2bPayment).where(C2bPayment.id == inserted).with_for_update()
    ).scalar_one()
    student_id, invoice_id = resolve_account_number(row.bill_ref)
    if student_id is not None:
        _apply_c2b(row, student_id, invoice_id)
    audit.record(
        "create",
        "mpesa_c2b_payment",
        row.id,
        audit.snapshot(row, ("trans_id", "amount_minor", "bill_ref", "status", "invoice_id", "payment_id")),
    )
    return row.status


def _apply_c2b(row: C2bPayment, student_id, invoice_id, status="applied"):
    existing = finance.payment_by_reference(row.trans_id)
    row.student_id, row.invoice_id = student_id, invoice_id
    if existing is not None:  # the STK callback of the same transaction was recorded first
        row.status, row.payment_id = "duplicate", existing.id
        return
    payment, _ = finance.record_received(
        student_id,
        invoice_id,
        row.amount_minor,
        row.trans_id,
        row.trans_time,
        note=f"M-Pesa paybill {row.bill_ref}"[:500],
    )
    row.status, row.payment_id = status, payment.id
    enqueue_after_commit(RECEIPT_TASK, payment.id)


def c2b_or_404(ident) -> C2bPayment:
    row = db.session.execute(
        select(C2bPayment).where(C2bPayment.id == ident).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("paybill payment")
    return row


def assign_suspense(row: C2bPayment, invoice_id: int, principal) -> C2bPayment:
    """An accountant puts a suspense payment on an invoice: the ledger row is recorded then."""
    if row.status != "suspense":
        raise Conflict(f"This payment is not in suspense (it is {row.status}).")
    invoice = db.session.execute(select(Invoice).where(Invoice.id == invoice_id)).scalar_one_or_none()
    if invoice is None:
        raise ValidationFailed({"invoice_id": f"no such invoice ({invoice_id})"})
    if invoice.status == "void":
        raise ValidationFailed({"invoice_id": "is void; payments cannot be allocated to it"})
    _apply_c2b(row, invoice.student_id, invoice.id, status="assigned")
    if row.status == "duplicate":
        raise Conflict("This transaction is already recorded as a payment.")
    row.assigned_by_id, row.assigned_at = principal.user_id, utcnow()
    audit.record(
        "assign",
        "mpesa_c2b_payment",
        row.id,
        audit.diff(row, ("status", "invoice_id", "student_id", "payment_id", "assigned_by_id")),
    )
    return row
