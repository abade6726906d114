"""From an outbox row to a delivered message: render the templates, build the MIME message, hand it to
a transport (SMTP, or .eml files in the embedded default). No database access here: services.py owns
the row's state machine.
"""

import contextlib
import os
import re
import smtplib
import ssl
import tempfile
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATES = (
    "absence_alert",
    "fee_reminder",
    "fee_overdue",
    "export_ready",
    "payment_receipt",
    "announcement",  # app/announcements/services.py
    "account_invitation",  # app/auth/accounts.py
    "password_reset",
)


class PermanentMailError(Exception):
    """Retrying cannot help (bad template, recipient refused with a 5xx): the row is marked failed."""


class TransientMailError(Exception):
    """This message failed for now (a 4xx answer): retry it later with backoff."""


class ConnectionMailError(Exception):
    """The mail server could not be reached or dropped us: every message still waiting in the batch
    would fail the same way, so the batch stops (each row is retried later with backoff)."""


@lru_cache(maxsize=1)
def _env():
    # StrictUndefined: a context missing a variable fails loudly (a permanent error) instead of
    # mailing a guardian a blank where the child's name should be. HTML is autoescaped, text is not.
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template, context):
    """(text, html) for a template name; PermanentMailError when the template or a variable is missing."""
    if template not in TEMPLATES:
        raise PermanentMailError(f"unknown email template {template!r}")
    try:
        env = _env()
        text = env.get_template(f"{template}.txt").render(**context)
        html = env.get_template(f"{template}.html").render(**context)
    except TemplateError as exc:
        raise PermanentMailError(f"template {template!r} failed to render: {exc}") from exc
    return text, html


def mail_domain(mail_from):
    address = parseaddr(mail_from)[1]
    return address.rpartition("@")[2] or "schoolhouse.invalid"


def message_id(outbox_id, created_at, mail_from):
    """Deterministic Message-ID: the same outbox row always yields the same header, so a message sent
    twice (see services.py: the window after the server accepted it but before the row was marked sent)
    is two copies of ONE message, which mail clients and servers can collapse and operators can spot.
    The row's creation time keeps ids unique across databases that reuse the same row numbers."""
    stamp = created_at.strftime("%Y%m%d%H%M%S%f") if created_at else "0"
    return f"<outbox.{outbox_id}.{stamp}@{mail_domain(mail_from)}>"


def _one_line(value):
    return re.sub(r"\s+", " ", str(value or "")).strip()


def build_message(*, outbox_id, created_at, to, subject, text, html, mail_from, reply_to=None):
    msg = EmailMessage()
    msg["Subject"] = _one_line(subject)
    msg["From"] = mail_from
    msg["To"] = to
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(outbox_id, created_at, mail_from)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to a robot
    msg["X-Schoolhouse-Outbox-Id"] = str(outbox_id)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def valid_address(value):
    """True for a single plain address we are willing to put in To:."""
    value = (value or "").strip()
    if not value or any(c in value for c in "\r\n,;<>"):
        return False
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError):
        return False
    return "@" in value


# --------------------------------------------------------------------------------------------------
# Transports: used as `with transport_for(config) as t: t.send(msg)` for one batch
# --------------------------------------------------------------------------------------------------


class SmtpTransport:
    """One SMTP connection per batch, opened on first use, reopened after an error."""

    def __init__(self, config):
        self.host = config["SMTP_HOST"]
        self.port = int(config.get("SMTP_PORT") or 25)
        self.user = config.get("SMTP_USER")
        self.password = config.get("SMTP_PASSWORD")
        self.starttls = bool(config.get("SMTP_STARTTLS"))
        self.timeout = float(config.get("SMTP_TIMEOUT") or 10)
        self.smtp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.quit()
            self.smtp = None

    def _connect(self):
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.user:
                smtp.login(self.user, self.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise ConnectionMailError(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectionMailError(f"cannot connect to SMTP {self.host}:{self.port}: {exc!r}") from exc
        return smtp

    def send(self, msg):
        if self.smtp is None:
            self.smtp = self._connect()
        try:
            refused = self.smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            self.close()
            codes = [code for code, _ in exc.recipients.values()]
            err = f"recipient refused: {exc.recipients!r}"
            if codes and all(c >= 500 for c in codes):
                raise PermanentMailError(err) from exc
            raise TransientMailError(err) from exc
        except smtplib.SMTPServerDisconnected as exc:
            self.close()
            raise ConnectionMailError(f"SMTP server disconnected: {exc!r}") from exc
        except smtplib.SMTPResponseException as exc:
            # SMTPSenderRefused, SMTPDataError, ...: 5xx is final, 4xx is "try again later".
            self.close()
            err = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if exc.smtp_code >= 500:
                raise PermanentMailError(err) from exc
            raise TransientMailError(err) from exc
        except (smtplib.SMTPException, OSError) as exc:  # timeouts, resets: the connection is gone
            self.close()
            raise ConnectionMailError(f"SMTP connection failed: {exc!r}") from exc
        if refused:  # only some recipients refused; we send one recipient per message
            raise PermanentMailError(f"recipient refused: {refused!r}")


class FileTransport:
    """Embedded default: each message becomes MAIL_DIR/<message id>.eml. The file name comes from the
    deterministic Message-ID, so sending the same row again overwrites one file instead of adding one."""

    def __init__(self, config):
        self.directory = Path(config["MAIL_DIR"])

    def __enter__(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc):
        return None

    def send(self, msg):
        name = re.sub(r"[^A-Za-z0-9._@-]", "", msg["Message-ID"]) + ".eml"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".eml")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(msg.as_bytes())
            os.replace(tmp, self.directory / name)  # atomic: a reader never sees half a message
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.directory / name


def transport_for(config):
    backend = config.get("MAIL_BACKEND") or ("smtp" if config.get("SMTP_HOST") else "file")
    if backend == "smtp":
        if not config.get("SMTP_HOST"):
            raise ConnectionMailError("MAIL_BACKEND is smtp but SMTP_HOST is not set")
        return SmtpTransport(config)
    if backend == "file":
        return FileTransport(config)
    raise ConnectionMailError(f"unknown MAIL_BACKEND {backend!r} (smtp or file)")
