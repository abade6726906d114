"""The page an invitation or password-reset e-mail links to: PUBLIC_BASE_URL/account/password?token=...

A plain HTML form (no script), so a new school's admin needs nothing but a browser to start. Opening
the page does not use the link, since mail scanners fetch links before people do; only sending the
form does (app/auth/accounts.py). The token travels in the form body on that POST, so it is not
repeated in a second URL.
"""

import base64
import hashlib

from flask import Blueprint, make_response, render_template, request, url_for

from app.auth import accounts
from app.auth.passwords import MIN_LENGTH, password_problem
from app.core.auth import public
from app.core.errors import ApiError

bp = Blueprint("account_pages", __name__, template_folder="templates")

_STYLE = (
    "body{font-family:Arial,Helvetica,sans-serif;background:#f4f5f7;color:#1f2933;margin:0}"
    "main{max-width:420px;margin:48px auto;background:#fff;padding:28px;border-radius:6px}"
    "h1{font-size:20px;margin-top:0}label{display:block;margin:14px 0 4px}"
    "input{width:100%;padding:8px;box-sizing:border-box;font-size:15px}"
    "button{margin-top:12px;padding:10px 18px;background:#2f6fb3;color:#fff;border:0;border-radius:4px;"
    "font-size:15px}.error{color:#b00020}.ok{color:#1b7a3d}.who,.hint{color:#6b7785;font-size:13px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# Only the one inline style block, and the form may post only back here.
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
TITLES = {"invite": "Choose your password", "reset": "Choose a new password"}


def _page(status=200, **context):
    context.setdefault("title", "Schoolhouse")
    html = render_template(
        "auth/password_page.html",
        style=_STYLE,
        min_length=MIN_LENGTH,
        action=url_for("account_pages.save_password"),
        **context,
    )
    resp = make_response(html, status)
    resp.headers["Content-Security-Policy"] = PAGE_CSP
    resp.headers["Cache-Control"] = "no-store"  # the page holds a live token
    return resp


def _unusable(exc: ApiError):
    return _page(exc.status, title="This link cannot be used", message=exc.detail, error=True)


@bp.get("/account/password")
@public
def password_page():
    token = request.args.get("token", "")
    try:
        link = accounts.describe_link(token)
    except ApiError as exc:
        return _unusable(exc)
    return _page(
        title=TITLES[link["purpose"]],
        email=link["email"],
        school=link["school"],
        token=token,
        show_form=True,
    )


@bp.post("/account/password")
@public
def save_password():
    token = request.form.get("token", "")
    # Stripped, as every JSON body is (app/core/schemas.py Body), so the login finds the same password.
    password = request.form.get("password", "").strip()
    try:
        link = accounts.describe_link(token)
        problem = password_problem(password)
        if problem:
            problem = f"The password {problem}."
        elif password != request.form.get("confirm", "").strip():
            problem = "The two passwords are not the same."
        if problem:
            return _page(
                422,
                title=TITLES[link["purpose"]],
                email=link["email"],
                school=link["school"],
                token=token,
                show_form=True,
                message=problem,
                error=True,
            )
        done = accounts.set_password_from_link(token, password)
    except ApiError as exc:
        return _unusable(exc)
    return _page(
        title="Your password is saved",
        email=done["email"],
        school=done["school"],
        message="Your password is saved. Every earlier session of this account has ended.",
        done=True,
    )
