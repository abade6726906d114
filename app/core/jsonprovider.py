"""orjson behind Flask's JSON API: several times faster than the stdlib for list pages."""

import orjson
from flask.json.provider import JSONProvider

from app.core.schemas import dumps


class OrjsonProvider(JSONProvider):
    mimetype = "application/json"

    def dumps(self, obj, **kwargs):
        return dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)

    def response(self, *args, **kwargs):
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(dumps(obj), mimetype=self.mimetype)  # type: ignore[arg-type]  # bytes are a valid body
