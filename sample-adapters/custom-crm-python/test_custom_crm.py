"""The adapter's logic, natively: `python3 -m unittest` in this folder."""

import json
import pathlib
import unittest

import custom_crm

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def fixture(name):
    return (FIXTURES / name).read_bytes()


class HandleWebhook(unittest.TestCase):
    def test_a_won_deal_becomes_one_event_with_its_amount_as_a_string(self):
        [event] = custom_crm.handle_webhook(fixture("deal-won.json"), {})
        self.assertEqual(event["event_type"], "deal.won")
        self.assertEqual(event["entity_id"], "D-42")
        self.assertEqual(event["idempotency_key"], "event:evt-1001")
        self.assertEqual(event["payload"]["amount"], "1234.50")

    def test_an_amount_sent_as_a_number_keeps_its_exact_digits(self):
        [event] = custom_crm.handle_webhook(fixture("amount-as-number.json"), {})
        self.assertEqual(event["payload"]["amount"], "0.10")
        self.assertIn('"amount":"0.10"', custom_crm.payload_json(event["payload"]))

    def test_a_batch_keeps_the_known_types_in_order(self):
        events = custom_crm.handle_webhook(fixture("batch.json"), {"default_org_id": "org-1"})
        self.assertEqual(
            [e["event_type"] for e in events], ["contact.created", "deal.updated"]
        )
        self.assertEqual(events[0]["org_id"], "org-1")

    def test_malformed_input_is_a_bad_request_naming_the_field(self):
        with self.assertRaisesRegex(custom_crm.BadRequest, "data.amount"):
            custom_crm.handle_webhook(fixture("amount-not-decimal.json"), {})
        with self.assertRaisesRegex(custom_crm.BadRequest, "not JSON"):
            custom_crm.handle_webhook(b"{", {})

    def test_a_type_it_does_not_emit_is_ignored(self):
        body = json.dumps({"event_id": "e", "type": "task.done", "data": {}}).encode()
        with self.assertRaises(custom_crm.Ignored):
            custom_crm.handle_webhook(body, {})


if __name__ == "__main__":
    unittest.main()
