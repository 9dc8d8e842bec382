"""Native tests of the reshaping (plain Python, no component needed): python3 test_redact.py"""

import unittest

from redact import redact


class RedactTest(unittest.TestCase):
    def test_top_level_and_nested_fields_go(self):
        payload = {"email": "ada@example.com", "card": {"number": "4242", "brand": "visa"}, "n": 1}
        self.assertEqual(redact(payload, ["email", "card.number"]), {"card": {"brand": "visa"}, "n": 1})

    def test_missing_fields_are_ignored(self):
        self.assertEqual(redact({"a": 1}, ["b", "a.c", "x.y.z"]), {"a": 1})


if __name__ == "__main__":
    unittest.main()
