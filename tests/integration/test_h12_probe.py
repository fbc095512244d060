from __future__ import annotations
import time, uuid
from datetime import UTC, datetime, timedelta
import pytest
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration

def test_probe(stack: Stack) -> None:
    stack.start_worker()
    rid = f"early-{uuid.uuid4().hex[:6]}"
    send_at = datetime.now(UTC) + timedelta(seconds=0.9)
    stack.publish({"request_id": rid, "template_code": "welcome", "to_email": "e@example.com",
                   "send_at": send_at.isoformat(), "variables": {"name": "A", "link": "x"}})
    wait_for(lambda: stack.emails_to("e@example.com"), 20)
    m = stack.emails_to("e@example.com")[0]
    print("early by", send_at.timestamp() - m.received_at)
