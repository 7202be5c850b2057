"""Locust user for bench_inference: POSTs one JSON body to one path, as a Poisson process of a given rate per user.

    locust -f bench/locust_inference.py --headless -u 50 -r 50 -t 70s --host http://127.0.0.1:8000 \
        --bench-path /predict --bench-body '{"pair": "BTC/USDC"}' --bench-user-rps 10 --bench-warmup 10 --bench-out out.json

Locust rounds the response times it keeps to whole milliseconds; this file
records every response time exactly (after the warm-up) and writes them with
the failure count to --bench-out, for bench_inference to take percentiles.
"""

from __future__ import annotations

import json
import random
import time

from locust import FastHttpUser, between, events, task

_state: dict = {"times_ms": [], "failures": 0, "statuses": {}, "first": None, "last": None, "start": None}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument("--bench-path", default="/predict", help="Path to POST to.")
    parser.add_argument("--bench-body", default="{}", help="JSON body of every request.")
    parser.add_argument("--bench-user-rps", type=float, default=0.0, help="Requests per second per user (0: no pause).")
    parser.add_argument("--bench-warmup", type=float, default=10.0, help="Seconds not recorded at the start.")
    parser.add_argument("--bench-out", default="", help="Where to write the recorded response times (JSON).")


@events.test_start.add_listener
def _start(environment, **kwargs) -> None:
    _state["start"] = time.monotonic()


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None, **kwargs) -> None:
    now = time.monotonic()
    if _state["start"] is None or now - _state["start"] < _state.get("warmup", 0.0):
        return
    status = getattr(response, "status_code", 0)
    _state["statuses"][str(status)] = _state["statuses"].get(str(status), 0) + 1
    if exception is not None or status != 200:
        _state["failures"] += 1
        return
    _state["first"] = _state["first"] or now
    _state["last"] = now
    _state["times_ms"].append(response_time)


@events.quitting.add_listener
def _write(environment, **kwargs) -> None:
    out = environment.parsed_options.bench_out
    if out:
        with open(out, "w") as handle:
            json.dump({key: _state[key] for key in ("times_ms", "failures", "statuses", "first", "last")}, handle)


class PostUser(FastHttpUser):
    """One keep-alive connection per user; posts the configured body."""

    wait_time = between(0, 0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        _state["warmup"] = options.bench_warmup
        self.path = options.bench_path
        self.body = options.bench_body.encode()
        self.rate = options.bench_user_rps
        self.next_start = time.monotonic() + random.expovariate(self.rate) if self.rate > 0 else 0.0
        if self.rate > 0:
            self.wait_time = self.poisson_wait

    def poisson_wait(self) -> float:
        """Starts at exponential intervals (a Poisson process per user, so the users never fall into step)."""
        self.next_start += random.expovariate(self.rate)
        return max(self.next_start - time.monotonic(), 0.0)

    @task
    def post(self) -> None:
        self.client.post(self.path, data=self.body, headers={"Content-Type": "application/json"}, name=self.path)
