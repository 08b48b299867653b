"""The shared fake server answers over real HTTP, in script order, and logs what it received."""

import httpx

from tests.http_fake import FakeServer, Scripted


def test_scripted_replies_in_order_then_fallback():
    with FakeServer() as server:
        server.script("/v1/x", Scripted(status=429, headers={"Retry-After": "1"}), Scripted(json={"ok": 1}))
        server.fallback = lambda request: Scripted(json={"echo": request.json})
        first = httpx.post(server.url + "/v1/x", json={"a": 1})
        second = httpx.post(server.url + "/v1/x", json={"a": 2})
        third = httpx.post(server.url + "/v1/x", json={"a": 3})
    assert (first.status_code, first.headers["retry-after"]) == (429, "1")
    assert second.json() == {"ok": 1}
    assert third.json() == {"echo": {"a": 3}}
    assert [r.json["a"] for r in server.requests_to("/v1/x")] == [1, 2, 3]


def test_streamed_lines_arrive_whole():
    with FakeServer() as server:
        server.script("/s", Scripted(lines=[b'{"token_id": 1}\n', b'{"token_id": 2}\n'], content_type="application/x-ndjson"))
        with httpx.stream("POST", server.url + "/s", json={}) as response:
            lines = [line for line in response.iter_lines() if line]
    assert lines == ['{"token_id": 1}', '{"token_id": 2}']
