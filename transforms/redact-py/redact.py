"""The reshaping itself, plain Python: tested natively by test_redact.py."""


def redact(payload, fields):
    """`payload` without `fields` (dotted names reach into nested objects)."""
    for field in fields:
        *parents, last = field.split(".")
        node = payload
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return payload
