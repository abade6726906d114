"""orjson behind Flask's JSON API: several times faster than the stdlib for list pages."""

import orjson
from flask.json.provider import JSONProvider

from app.core.schemas import json_default

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


class OrjsonProvider(JSONProvider):
    mimetype = "application/json"

    def dumps(self, obj, **kwargs):
        return orjson.dumps(obj, default=json_default, option=_OPTS).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        body = orjson.dumps(obj, default=json_default, option=_OPTS)
        return self._app.response_class(body, mimetype=self.mimetype)  # type: ignore[arg-type]  # bytes are a valid body
