"""Example transform in Python: removes fields from the payload before the webhook leaves.

Built with componentize-py (PyPI) against the same contract as the Rust examples,
wit/transform/transform.wit:

    pip install componentize-py==0.25.1
    componentize-py -d ../../wit/transform -w transform componentize app -o redact_py_transform.wasm

Settings: `fields`, comma-separated payload fields to remove; a dotted name (`card.number`)
reaches into nested objects. The body keeps the hub's shape ({"id", "event_type",
"created_at", "payload"}), so receivers verify and parse it as usual.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

from redact import redact


class WitWorld(wit_world.WitWorld):
    def manifest(self) -> types.Manifest:
        return types.Manifest(
            name="redact-py",
            version="0.1.0",
            description="Removes payload fields before the webhook leaves (Python)",
        )

    def transform(self, event: types.Event, context: types.Context) -> types.Transformed:
        settings = {s.key: s.value for s in context.settings}
        fields = [f.strip() for f in settings.get("fields", "").split(",") if f.strip()]
        try:
            payload = json.loads(event.payload)
        except ValueError as e:
            raise Err(f"the payload is not JSON: {e}")
        body = {
            "id": event.id,
            "event_type": event.event_type,
            "created_at": event.created_at,
            "payload": redact(payload, fields),
        }
        encoded = json.dumps(body, separators=(",", ":")).encode()
        return types.Transformed_Deliver(types.Output(body=encoded, content_type=None, headers=[]))
