#!/usr/bin/env python3
"""A local Daraja (M-Pesa) simulator, with Africa's Talking's SMS endpoint beside it.

A real HTTP server (stdlib only, so it starts anywhere the app's venv does) for `make run`
(`make daraja-sim`) and the tests (tests/test_mpesa.py). It speaks the documented endpoints and
shapes (docs/PAYMENTS.md lists them):

  GET  /oauth/v1/generate?grant_type=client_credentials   Basic auth (consumer key:secret) -> token
  POST /mpesa/stkpush/v1/processrequest                     STK push (Bearer token; Password checked)
  POST /mpesa/stkpushquery/v1/query                         STK push status
  POST /mpesa/c2b/v1/registerurl                            C2B validation/confirmation URLs
  POST /version1/messaging                                  Africa's Talking: send an SMS (apiKey header)

and it sends what Safaricom (and Africa's Talking) send: the STK callback (Body.stkCallback with
CallbackMetadata), C2B validation and confirmation, SMS delivery reports. Controls, under /sim/:

  POST /sim/scenario   {"result_code": 0|1032|..., "copies": n, "deliver": "auto"|"hold"|"never",
                        "delay": s, "retries": n, "processing": bool}  applies to later STK pushes
  POST /sim/deliver    {"shuffle": bool, "seed": n}  deliver every held callback now (synchronously),
                        shuffled = out of order; answers what each delivery got back
  POST /sim/c2b/pay    {"ShortCode", "Amount", "BillRefNumber", "MSISDN", "copies", "TransID"?,
                        "shuffle"?} a paybill payment: validation, then the confirmation(s), now
  POST /sim/config     {"at_delivery_report_url": url, "at_report_status": "Success"}
  GET  /sim/state      checkouts, registrations, SMS received, deliveries made
  POST /sim/reset

Run: python scripts/daraja_sim.py --port 8089 [--consumer-key K --consumer-secret S --passkey P]
"""

import argparse
import base64
import json
import random
import string
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STK_RESULTS = {
    0: "The service request is processed successfully.",
    1: "The balance is insufficient for the transaction.",
    1032: "Request cancelled by user",
    1037: "DS timeout user cannot be reached",
    2001: "The initiator information is invalid.",
}
BLOCKED_URL_WORDS = ("mpesa", "m-pesa", "safaricom")  # Daraja refuses URLs containing these


def _now_stamp():
    return datetime.now(UTC).astimezone().strftime("%Y%m%d%H%M%S")


def _receipt(rng):
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(10))


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.rng = random.Random()
        self.reset()

    def reset(self):
        with self.lock:
            self.tokens = {}
            self.checkouts = {}
            self.registrations = {}
            self.held = []  # (url, body, content_type) waiting for /sim/deliver
            self.deliveries = []
            self.sms = []
            self.counter = 0
            self.scenario = {
                "result_code": 0,
                "copies": 1,
                "deliver": self.args.deliver,
                "delay": self.args.delay,
                "retries": 2,
                "processing": False,
            }
            self.config = {"at_delivery_report_url": None, "at_report_status": "Success"}

    def next_id(self):
        self.counter += 1
        return self.counter


def post(url, body, content_type="application/json", timeout=10):
    data = json.dumps(body).encode() if content_type == "application/json" else body.encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"


class Handler(BaseHTTPRequestHandler):
    server_version = "DarajaSim/1.0"
    state: State

    def log_message(self, fmt, *args):
        if self.state.args.verbose:
            super().log_message(fmt, *args)

    # -- plumbing -------------------------------------------------------------------------------------

    def _send(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _raw_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self):
        try:
            body = json.loads(self._raw_body() or b"{}")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def _error(self, status, code, message):
        self._send(status, {"requestId": f"sim-{time.time_ns()}", "errorCode": code, "errorMessage": message})

    def _bearer_ok(self):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        expiry = self.state.tokens.get(token)
        if expiry is None or expiry < time.time():
            self._error(401, "404.001.03", "Invalid Access Token")
            return False
        return True

    def _password_ok(self, body):
        shortcode, stamp = str(body.get("BusinessShortCode", "")), str(body.get("Timestamp", ""))
        wanted = base64.b64encode(f"{shortcode}{self.state.args.passkey}{stamp}".encode()).decode()
        if body.get("Password") != wanted:
            self._error(400, "400.002.02", "Bad Request - Invalid Password")
            return False
        return True

    # -- routes ---------------------------------------------------------------------------------------

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/oauth/v1/generate":
            return self.oauth(urllib.parse.parse_qs(url.query))
        if url.path == "/sim/state":
            with self.state.lock:
                return self._send(
                    200,
                    {
                        "checkouts": self.state.checkouts,
                        "registrations": self.state.registrations,
                        "sms": self.state.sms,
                        "held": len(self.state.held),
                        "deliveries": self.state.deliveries,
                        "scenario": self.state.scenario,
                    },
                )
        if url.path == "/sim/health":
            return self._send(200, {"ok": True})
        return self._error(404, "404.001.01", "Resource not found")

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        routes = {
            "/mpesa/stkpush/v1/processrequest": self.stk_push,
            "/mpesa/stkpushquery/v1/query": self.stk_query,
            "/mpesa/c2b/v1/registerurl": self.register_url,
            "/version1/messaging": self.at_send,
            "/sim/scenario": self.sim_scenario,
            "/sim/deliver": self.sim_deliver,
            "/sim/c2b/pay": self.sim_c2b_pay,
            "/sim/config": self.sim_config,
            "/sim/reset": self.sim_reset,
        }
        route = routes.get(path)
        if route is None:
            return self._error(404, "404.001.01", "Resource not found")
        return route()

    def oauth(self, query):
        if query.get("grant_type") != ["client_credentials"]:
            return self._error(400, "400.008.02", "Invalid grant type passed")
        auth = self.headers.get("Authorization", "")
        try:
            key, _, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            key = secret = ""
        args = self.state.args
        if not auth.startswith("Basic ") or (key, secret) != (args.consumer_key, args.consumer_secret):
            return self._error(400, "400.008.01", "Invalid Authentication passed")
        token = "".join(self.state.rng.choice(string.ascii_letters + string.digits) for _ in range(28))
        self.state.tokens[token] = time.time() + 3599
        return self._send(200, {"access_token": token, "expires_in": "3599"})

    def stk_push(self):
        if not self._bearer_ok():
            return None
        body = self._json()
        if body is None:
            return self._error(400, "400.002.02", "Bad Request - Invalid JSON")
        required = (
            "BusinessShortCode",
            "Password",
            "Timestamp",
            "TransactionType",
            "Amount",
            "PartyA",
            "PartyB",
            "PhoneNumber",
            "CallBackURL",
            "AccountReference",
            "TransactionDesc",
        )
        missing = [f for f in required if body.get(f) in (None, "")]
        if missing:
            return self._error(400, "400.002.02", f"Bad Request - Invalid {missing[0]}")
        if not self._password_ok(body):
            return None
        phone = str(body["PhoneNumber"])
        if not (phone.isdigit() and len(phone) == 12 and phone.startswith("254")):
            return self._error(400, "400.002.02", "Bad Request - Invalid PhoneNumber")
        try:
            amount = float(body["Amount"])
        except (TypeError, ValueError):
            amount = 0
        if amount < 1 or amount != int(amount):
            return self._error(400, "400.002.02", "Bad Request - Invalid Amount")
        if body["TransactionType"] not in ("CustomerPayBillOnline", "CustomerBuyGoodsOnline"):
            return self._error(400, "400.002.02", "Bad Request - Invalid TransactionType")
        url = str(body["CallBackURL"])
        if not url.startswith(("http://", "https://")):
            return self._error(400, "400.002.02", "Bad Request - Invalid CallBackURL")
        st = self.state
        with st.lock:
            n = st.next_id()
            scenario = dict(st.scenario)
            merchant = f"{st.rng.randint(10000, 99999)}-{n}-1"
            checkout = f"ws_CO_{_now_stamp()}{n:06d}"
            code = int(scenario["result_code"])
            st.checkouts[checkout] = {
                "MerchantRequestID": merchant,
                "CheckoutRequestID": checkout,
                "BusinessShortCode": str(body["BusinessShortCode"]),
                "Amount": int(amount),
                "PhoneNumber": int(phone),
                "AccountReference": body["AccountReference"],
                "CallBackURL": url,
                "ResultCode": code,
                "ResultDesc": STK_RESULTS.get(code, "The transaction failed."),
                "MpesaReceiptNumber": _receipt(st.rng) if code == 0 else None,
                "TransactionDate": int(_now_stamp()),
                "processing": bool(scenario["processing"]),
            }
            callback = self._stk_callback(st.checkouts[checkout])
        self._send(
            200,
            {
                "MerchantRequestID": merchant,
                "CheckoutRequestID": checkout,
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            },
        )
        if not scenario["processing"]:
            schedule(st, [(url, callback)] * int(scenario["copies"]), scenario)
        return None

    @staticmethod
    def _stk_callback(c):
        inner = {
            "MerchantRequestID": c["MerchantRequestID"],
            "CheckoutRequestID": c["CheckoutRequestID"],
            "ResultCode": c["ResultCode"],
            "ResultDesc": c["ResultDesc"],
        }
        if c["ResultCode"] == 0:
            inner["CallbackMetadata"] = {
                "Item": [
                    {"Name": "Amount", "Value": c["Amount"]},
                    {"Name": "MpesaReceiptNumber", "Value": c["MpesaReceiptNumber"]},
                    {"Name": "Balance"},
                    {"Name": "TransactionDate", "Value": c["TransactionDate"]},
                    {"Name": "PhoneNumber", "Value": c["PhoneNumber"]},
                ]
            }
        return {"Body": {"stkCallback": inner}}

    def stk_query(self):
        if not self._bearer_ok():
            return None
        body = self._json() or {}
        if not self._password_ok(body):
            return None
        c = self.state.checkouts.get(str(body.get("CheckoutRequestID")))
        if c is None:
            return self._error(400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")
        if c["processing"]:
            return self._error(500, "500.001.1001", "The transaction is being processed")
        return self._send(
            200,
            {
                "ResponseCode": "0",
                "ResponseDescription": "The service request has been accepted successsfully",
                "MerchantRequestID": c["MerchantRequestID"],
                "CheckoutRequestID": c["CheckoutRequestID"],
                "ResultCode": str(c["ResultCode"]),
                "ResultDesc": c["ResultDesc"],
            },
        )

    def register_url(self):
        if not self._bearer_ok():
            return None
        body = self._json() or {}
        for field in ("ShortCode", "ResponseType", "ConfirmationURL", "ValidationURL"):
            if not body.get(field):
                return self._error(400, "400.002.02", f"Bad Request - Invalid {field}")
        if body["ResponseType"] not in ("Completed", "Cancelled"):
            return self._error(400, "400.002.02", "Bad Request - Invalid ResponseType")
        for field in ("ConfirmationURL", "ValidationURL"):
            if any(word in body[field].lower() for word in BLOCKED_URL_WORDS):
                return self._error(400, "400.002.02", f"Bad Request - Invalid {field}")
        with self.state.lock:
            self.state.registrations[str(body["ShortCode"])] = body
        return self._send(
            200,
            {
                "OriginatorCoversationID": f"sim-{time.time_ns()}",
                "ResponseCode": "0",
                "ResponseDescription": "Success",
            },
        )

    def at_send(self):
        if self.headers.get("apiKey") != self.state.args.at_api_key:
            return self._send(401, {"error": "The supplied authentication is invalid"})
        form = urllib.parse.parse_qs(self._raw_body().decode(), keep_blank_values=True)
        username, to, message = (form.get(k, [""])[0] for k in ("username", "to", "message"))
        if not username or not to or not message:
            return self._send(400, {"error": "username, to and message are required"})
        recipients = []
        st = self.state
        with st.lock:
            for number in [n.strip() for n in to.split(",") if n.strip()]:
                ok = number.startswith("+") and number[1:].isdigit() and 10 <= len(number) <= 16
                message_id = f"ATXid_sim{st.next_id()}"
                recipients.append(
                    {
                        "statusCode": 101 if ok else 403,
                        "number": number,
                        "status": "Success" if ok else "InvalidPhoneNumber",
                        "cost": "KES 0.8000" if ok else "0",
                        "messageId": message_id if ok else "None",
                    }
                )
                if ok:
                    st.sms.append(
                        {
                            "id": message_id,
                            "username": username,
                            "to": number,
                            "from": form.get("from", [None])[0],
                            "message": message,
                        }
                    )
            report_url = st.config["at_delivery_report_url"]
            report_status = st.config["at_report_status"]
        sent = sum(r["statusCode"] == 101 for r in recipients)
        self._send(
            201,
            {
                "SMSMessageData": {
                    "Message": f"Sent to {sent}/{len(recipients)} Total Cost: KES {0.8 * sent:.4f}",
                    "Recipients": recipients,
                }
            },
        )
        if report_url:
            reports = [
                (
                    report_url,
                    urllib.parse.urlencode(
                        {
                            "id": r["messageId"],
                            "status": report_status,
                            "phoneNumber": r["number"],
                            "networkCode": "63902",
                            "retryCount": "0",
                        }
                    ),
                )
                for r in recipients
                if r["statusCode"] == 101
            ]
            schedule(st, reports, dict(st.scenario), "application/x-www-form-urlencoded")
        return None

    # -- controls ---------------------------------------------------------------------------------------

    def sim_scenario(self):
        body = self._json() or {}
        with self.state.lock:
            for key in ("result_code", "copies", "deliver", "delay", "retries", "processing"):
                if key in body:
                    self.state.scenario[key] = body[key]
            scenario = dict(self.state.scenario)
        self._send(200, scenario)

    def sim_config(self):
        body = self._json() or {}
        with self.state.lock:
            self.state.config.update({k: v for k, v in body.items() if k in self.state.config})
            config = dict(self.state.config)
        self._send(200, config)

    def sim_reset(self):
        self.state.reset()
        self._send(200, {"ok": True})

    def sim_deliver(self):
        body = self._json() or {}
        st = self.state
        with st.lock:
            held, st.held = st.held, []
        if body.get("shuffle"):
            random.Random(body.get("seed")).shuffle(held)
        results = [deliver_once(st, url, payload, ctype) for url, payload, ctype in held]
        self._send(200, {"delivered": results})

    def sim_c2b_pay(self):
        body = self._json() or {}
        st = self.state
        shortcode = str(body.get("ShortCode", ""))
        registration = st.registrations.get(shortcode)
        if registration is None:
            return self._send(400, {"error": f"no URLs registered for shortcode {shortcode}"})
        with st.lock:
            trans_id = body.get("TransID") or _receipt(st.rng)
        payment = {
            "TransactionType": "Pay Bill",
            "TransID": trans_id,
            "TransTime": _now_stamp(),
            "TransAmount": f"{float(body.get('Amount', 0)):.2f}",
            "BusinessShortCode": shortcode,
            "BillRefNumber": str(body.get("BillRefNumber", "")),
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": str(body.get("MSISDN", "254708374149")),
            "FirstName": body.get("FirstName", "John"),
            "MiddleName": "",
            "LastName": body.get("LastName", "Doe"),
        }
        status, answer = post(registration["ValidationURL"], payment)
        validation = {"status": status, "body": answer}
        try:
            accepted = status == 200 and str(json.loads(answer).get("ResultCode")) == "0"
        except ValueError:
            accepted = False
        if status in (0, 500, 502, 503, 504):  # unreachable: ResponseType decides
            accepted = registration["ResponseType"] == "Completed"
        confirmations = []
        if accepted:
            copies = [(registration["ConfirmationURL"], payment, "application/json")] * int(
                body.get("copies", 1)
            )
            confirmations = [deliver_once(st, *c) for c in copies]
        self._send(
            200,
            {
                "TransID": trans_id,
                "accepted": accepted,
                "validation": validation,
                "confirmations": confirmations,
            },
        )
        return None


def deliver_once(st, url, payload, content_type="application/json"):
    status, answer = post(url, payload, content_type)
    record = {"url": url, "status": status, "body": answer[:500]}
    with st.lock:
        st.deliveries.append(record)
    return record


def schedule(st, items, scenario, content_type="application/json"):
    """Hold the callbacks for /sim/deliver, drop them ("never": only the query API tells), or send
    them from a thread after `delay` seconds, retrying a failed delivery `retries` times."""
    mode = scenario["deliver"]
    if mode == "never":
        return
    if mode == "hold":
        with st.lock:
            st.held.extend((url, body, content_type) for url, body in items)
        return

    def run():
        time.sleep(float(scenario["delay"]))
        for url, body in items:
            for attempt in range(int(scenario["retries"]) + 1):
                if 200 <= deliver_once(st, url, body, content_type)["status"] < 300:
                    break
                time.sleep(min(2**attempt, 10))

    threading.Thread(target=run, daemon=True).start()


def make_server(args):
    state = State(args)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--consumer-key", default="sim-consumer-key")
    parser.add_argument("--consumer-secret", default="sim-consumer-secret")
    parser.add_argument("--passkey", default="sim-passkey")
    parser.add_argument("--at-api-key", default="sim-at-api-key")
    parser.add_argument("--deliver", choices=("auto", "hold", "never"), default="auto")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds before an automatic callback")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    server = make_server(args)
    host, port = server.server_address[:2]
    print(f"daraja simulator on http://{host}:{port} (deliver={args.deliver})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
