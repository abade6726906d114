"""SMS delivery reports: Africa's Talking posts one per message to the URL `flask sms report-url`
prints (public: the path's token, SMS_CALLBACK_TOKEN or one derived from SECRET_KEY, is the credential)."""

from flask import Blueprint, jsonify, request

from app.core.auth import public
from app.core.errors import NotFound, ValidationFailed
from app.core.openapi import doc
from app.notifications import sms_services
from app.notifications.schemas import DeliveryReportIn, DeliveryReportOut

bp = Blueprint("notifications", __name__)


@bp.post("/sms/delivery-reports/<token>")
@public
@doc(
    "An SMS delivery report from Africa's Talking (form fields id, status, phoneNumber, failureReason)",
    body=DeliveryReportIn,
    media="application/x-www-form-urlencoded",
    out=DeliveryReportOut,
    path={"token": {"type": "string", "minLength": 1, "maxLength": 100}},
    tags=["sms"],
)
def delivery_report(token):
    if not sms_services.report_token_ok(token):
        raise NotFound("report URL")
    form = request.form
    message_id, status = form.get("id", ""), form.get("status", "")
    if not message_id or not status:
        raise ValidationFailed({"id": "id and status are required"})
    found = sms_services.record_delivery_report(message_id, status, form.get("failureReason"))
    return jsonify({"recorded": found})
