"""Security headers on every answer, and cross-origin access (CORS) from an allow-list.

The headers are a short after-request hook rather than flask-talisman: here they are a handful of
constants, while talisman's main work (HTTPS redirects, session-cookie flags, per-request nonces) does
not apply to a token API that keeps no cookies and sits behind a TLS-terminating proxy.
"""

from flask_cors import CORS

# JSON answers load nothing and belong in no frame. A view that serves a page (the API docs,
# app/docs/__init__.py) sets its own policy, which this hook leaves in place.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

# What a browser client of the API may send and read across origins.
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "If-None-Match", "X-Request-ID"]
CORS_EXPOSE_HEADERS = [
    "Content-Disposition",
    "ETag",
    "Link",
    "Location",
    "Retry-After",
    "X-Cache",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-Request-ID",
]


def security_headers(hsts_max_age: int) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # for browsers that predate CSP frame-ancestors
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": API_CSP,
    }
    if hsts_max_age > 0:  # production only (config.ProductionConfig); browsers ignore it over plain HTTP
        headers["Strict-Transport-Security"] = f"max-age={hsts_max_age}; includeSubDomains"
    return headers


def register_security_headers(app):
    everything = list(security_headers(app.config.get("HSTS_MAX_AGE", 0)).items())
    but_csp = [(name, value) for name, value in everything if name != "Content-Security-Policy"]

    def add_security_headers(response):
        # Appended, not setdefault per header (each scans the list: a measurable share of a cached read,
        # `make bench-cpu`); only the policy may be set already, by a page that has its own.
        headers = response.headers
        for name, value in but_csp if "Content-Security-Policy" in headers else everything:
            headers.add(name, value)
        return response

    app.after_request(add_security_headers)
    origins = app.config.get("CORS_ORIGINS") or []
    if origins:  # none by default: without the setting no answer carries Access-Control-* headers
        CORS(
            app,
            resources={r"/api/*": {"origins": origins}},
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            supports_credentials=False,  # bearer tokens, never cookies
            max_age=600,
        )
