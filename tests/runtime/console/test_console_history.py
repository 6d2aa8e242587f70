"""The invocation history and the per-request log capture behind the console's Functions panel."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from runtime.console.history import MAX_LINES_PER_REQUEST, InvocationHistory, RequestLogCapture
from runtime.functions.secrets import SECRETS

log = logging.getLogger("console-history-test")


def _fields(function: str, **extra: Any) -> dict[str, Any]:
    return {
        "function": function,
        "method": "GET",
        "path": f"/{function}",
        "query": "",
        "status": 200,
        "duration_ms": 1.0,
        "request_id": "r",
        "started_at": 0.0,
        **extra,
    }


def test_each_function_keeps_its_last_invocations() -> None:
    history = InvocationHistory(per_function=3)
    for i in range(5):
        history.add(**_fields("a", request_id=f"a{i}"))
    history.add(**_fields("b", request_id="b0"))
    kept = history.records()
    assert [r.request_id for r in kept if r.function == "a"] == ["a2", "a3", "a4"]
    assert [r.request_id for r in kept if r.function == "b"] == ["b0"]
    assert [r.seq for r in kept] == sorted(r.seq for r in kept)
    assert [r.request_id for r in history.records(after=kept[-2].seq)] == ["b0"]


async def test_a_waiting_reader_wakes_on_a_new_invocation() -> None:
    history = InvocationHistory()
    assert await history.wait_for_more(0, timeout_s=0.01) == []
    waiting = asyncio.create_task(history.wait_for_more(0, timeout_s=5))
    await asyncio.sleep(0)  # a turn of the loop, not a delay: the reader runs up to its wait before the add
    history.add(**_fields("a"))
    (record,) = await asyncio.wait_for(waiting, 1)
    assert record.function == "a"


def _capture() -> RequestLogCapture:
    capture = RequestLogCapture()
    logging.getLogger().addHandler(capture)
    log.setLevel(logging.DEBUG)
    return capture


async def test_each_request_gets_its_own_lines_also_from_its_threads() -> None:
    capture = _capture()
    both_logged = asyncio.Barrier(2)
    try:

        async def request(word: str) -> list[str]:
            with capture.capturing() as lines:
                log.info("async %s", word)
                await both_logged.wait()  # the other request logs meanwhile
                await asyncio.to_thread(log.warning, "thread %s", word)
            return [line.message for line in lines]

        first, second = await asyncio.gather(request("one"), request("two"))
        assert first == ["async one", "thread one"] and second == ["async two", "thread two"]
        log.info("outside any request")  # not captured, and no error
    finally:
        logging.getLogger().removeHandler(capture)


def test_lines_are_scrubbed_bounded_and_carry_tracebacks() -> None:
    capture = _capture()
    SECRETS.set("console-test", ["hunter2-secret-value"])
    try:
        with capture.capturing() as lines:
            log.warning("the password is %s", "hunter2-secret-value")
            try:
                raise RuntimeError("hunter2-secret-value inside")
            except RuntimeError:
                log.exception("failed")
            for i in range(MAX_LINES_PER_REQUEST + 10):
                log.debug("line %d", i)
        assert lines[0].message == "the password is [redacted]" and lines[0].level == "WARNING"
        assert "RuntimeError: [redacted] inside" in lines[1].message and "Traceback" in lines[1].message
        assert len(lines) == MAX_LINES_PER_REQUEST
        assert all("hunter2" not in line.message for line in lines)
    finally:
        SECRETS.set("console-test", [])
        logging.getLogger().removeHandler(capture)


def test_a_thread_not_started_by_the_request_is_not_captured() -> None:
    capture = _capture()
    try:
        with capture.capturing() as lines:
            thread = threading.Thread(target=log.warning, args=("from a thread of its own",))
            thread.start()
            thread.join()
            log.warning("from the request")
            logging.getLogger("uvicorn.access").warning('127.0.0.1:5000 - "GET /x HTTP/1.1" 200')
        assert [line.message for line in lines] == ["from the request"]  # not the thread's, nor the access log
    finally:
        logging.getLogger().removeHandler(capture)


async def test_two_servers_in_one_process_keep_their_requests_apart() -> None:
    first, second = _capture(), _capture()
    both_logged = asyncio.Barrier(2)
    try:

        async def request(capture: RequestLogCapture, word: str) -> list[str]:
            with capture.capturing() as lines:
                log.warning("line of %s", word)
                await both_logged.wait()  # both requests are open while each logs
            return [line.message for line in lines]

        one, two = await asyncio.gather(request(first, "one"), request(second, "two"))
        assert one == ["line of one"] and two == ["line of two"]
    finally:
        logging.getLogger().removeHandler(first)
        logging.getLogger().removeHandler(second)
