"""The console's pure parts: rates and percentiles from the workers' figures, the form built
from a params schema, the token and CSRF rules. Figures come from Redis, which anyone with
write access to it can fill: the rates must survive any value there."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from corec_manager.console.auth import Auth, check_bind, is_loopback
from corec_manager.console.forms import form_fields
from corec_manager.console.rates import Sampler, quantile
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

BOUNDS = [0.001, 0.01, 0.1, 1.0]


def figure(consumer: str, at: float, started: float, ok: int, errors: int = 0,
           buckets: list[int] | None = None) -> dict[str, Any]:  # fmt: skip
    outcomes = {"ok": ok}
    if errors:
        outcomes["handler_error"] = errors
    return {
        "consumer": consumer, "at": at, "started": started, "processed": ok + errors,
        "actions": {"echo": {"processor": "echo_proc", "outcomes": outcomes,
                             "buckets": buckets or [ok + errors, 0, 0, 0, 0], "sum": 0.0}},
    }  # fmt: skip


def test_rate_is_the_change_over_the_window() -> None:
    sampler = Sampler()
    sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 100, 50, 1000)]}, now=100)
    sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 110, 50, 1500, errors=20)]}, now=110)
    echo = sampler.actions(60)["echo"]
    assert echo["rate"] == pytest.approx(52.0)  # 520 commands in 10 s
    assert echo["errors"] == {"handler_error": 20}
    assert echo["total"] == 1520
    assert echo["processor"] == "echo_proc"


def test_one_sample_gives_totals_but_no_rate() -> None:
    sampler = Sampler()
    sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 100, 50, 1000)]}, now=100)
    echo = sampler.actions(60)["echo"]
    assert echo["rate"] == 0 and echo["count"] == 0 and echo["total"] == 1000


def test_a_restarted_worker_counts_from_zero() -> None:
    sampler = Sampler()
    sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 100, 50, 1000)]}, now=100)
    # Same consumer name, new process (started at 105): its totals restart.
    sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 110, 105, 30)]}, now=110)
    echo = sampler.actions(60)["echo"]
    assert echo["count"] == 30 and echo["rate"] == pytest.approx(30 / 5)


def test_a_worker_seen_late_does_not_count_its_past_as_a_burst() -> None:
    sampler = Sampler()
    sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 100, 50, 10)]}, now=100)
    both = [figure("w1", 110, 50, 20), figure("w2", 110, 10, 99_999)]  # w2 started long ago
    sampler.add({"buckets": BOUNDS, "workers": both}, now=110)
    assert sampler.actions(60)["echo"]["count"] == 10
    new = [figure("w1", 120, 50, 30), figure("w2", 120, 10, 100_009)]
    sampler.add({"buckets": BOUNDS, "workers": new}, now=120)
    # From its first figure on, w2 counts from there: each worker over its own span.
    echo = sampler.actions(60)["echo"]
    assert echo["count"] == 30  # 20 from w1 (since 100), 10 from w2 (since 110)
    assert echo["rate"] == pytest.approx(20 / 20 + 10 / 10)
    assert sampler.actions(5)["echo"]["count"] == 0  # only the newest sample in 5 s
    assert sampler.actions(10)["echo"]["count"] == 20  # 10 from each over the last step


def test_old_samples_leave_the_window() -> None:
    sampler = Sampler(keep_s=100)
    for i in range(30):
        sampler.add({"buckets": BOUNDS, "workers": [figure("w1", 10.0 * i, 0, 100 * i)]},
                    now=10.0 * i)  # fmt: skip
    assert len(sampler.samples) == 11  # 100 s kept
    assert sampler.actions(60)["echo"]["rate"] == pytest.approx(10.0)
    assert sampler.series(30) == [pytest.approx(10.0)] * 3


def test_quantile_interpolates_inside_its_bucket() -> None:
    # 100 observations: 50 under 1 ms, 49 in (1, 10] ms, 1 in (10, 100] ms.
    counts = [50, 49, 1, 0, 0]
    assert quantile(0.5, BOUNDS, counts) == pytest.approx(0.001)
    assert 0.001 < quantile(0.9, BOUNDS, counts) <= 0.01  # type: ignore[operator]
    assert 0.01 < quantile(0.999, BOUNDS, counts) <= 0.1  # type: ignore[operator]
    assert quantile(0.5, BOUNDS, [0, 0, 0, 0, 0]) is None
    assert quantile(0.99, BOUNDS, [0, 0, 0, 0, 7]) == 1.0  # past the last bound: that bound


@settings(max_examples=200, deadline=None)
@given(st.lists(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
), max_size=4))  # fmt: skip
def test_any_published_value_leaves_the_sampler_working(values: list[Any]) -> None:
    """A field of the workers' hash holds whatever was written there: the overview still
    renders, leaving out what it cannot read."""
    sampler = Sampler()
    workers = [v if not isinstance(v, dict) else {"consumer": "x", **v} for v in values]
    for now in (1.0, 2.0):
        sampler.add({"buckets": BOUNDS, "workers": workers}, now=now)
        sampler.add({"buckets": "nope", "workers": [figure("ok", now, 0, int(now))]}, now=now)
    sampler.actions(60)
    sampler.series(60)


class Inner(BaseModel):
    x: int


class Params(BaseModel):
    name: str = Field(description="who")
    count: int = 3
    ratio: float | None = None
    mode: str = Field("fast", json_schema_extra={"enum": ["fast", "slow"]})
    flag: bool = False
    tags: list[str] = []
    inner: Inner | None = None


def test_form_fields_follow_the_params_schema() -> None:
    fields = {f.name: f for f in form_fields(Params.model_json_schema())}
    assert list(fields) == ["name", "count", "ratio", "mode", "flag", "tags", "inner"]
    assert (fields["name"].kind, fields["name"].required, fields["name"].description) == (
        "text", True, "who"
    )  # fmt: skip
    assert (fields["count"].kind, fields["count"].default) == ("integer", "3")
    assert fields["ratio"].kind == "number" and not fields["ratio"].required
    assert (fields["mode"].kind, fields["mode"].choices) == ("select", ["fast", "slow"])
    assert (fields["flag"].kind, fields["flag"].default) == ("boolean", "false")
    assert (fields["tags"].kind, fields["tags"].default) == ("json", "[]")
    assert fields["inner"].kind == "json"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("127.1.2.3", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_only_loopback_serves_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (check_bind(host, None) is None) is loopback
    assert check_bind(host, "a-long-enough-token") is None
    assert "too short" in (check_bind(host, "short") or "")


def test_writes_need_the_session_and_the_csrf_value() -> None:
    auth = Auth("a-long-enough-token-123", open_reads=True)
    own = "http://127.0.0.1:8089"
    ok = {"cookie": auth.session, "authorization": None, "csrf": auth.csrf, "origin": own,
          "own_origin": own}  # fmt: skip
    assert auth.write_refusal(**ok) is None
    assert "sign in" in (auth.write_refusal(**{**ok, "cookie": None}) or "")
    assert "sign in" in (auth.write_refusal(**{**ok, "cookie": "forged"}) or "")
    assert "CSRF" in (auth.write_refusal(**{**ok, "csrf": None}) or "")
    assert "CSRF" in (auth.write_refusal(**{**ok, "csrf": auth.session}) or "")
    assert "cross-site" in (auth.write_refusal(**{**ok, "origin": "http://evil.test"}) or "")
    bearer = {**ok, "cookie": None, "csrf": None, "authorization": f"Bearer {auth.token}"}
    assert auth.write_refusal(**bearer) is None
    assert auth.write_refusal(**{**bearer, "authorization": "Bearer wrong"}) is not None
    # The cookie and the CSRF value are derived from the token, never the token itself.
    assert auth.token not in (auth.session, auth.csrf) and auth.session != auth.csrf
    assert auth.may_read(None, None)
    assert not Auth("a-long-enough-token-123", open_reads=False).may_read(None, None)


class _Url:
    path = "/dead-letters"


class _Request:
    url = _Url()


PWN = "<b id=pwn>"


@settings(max_examples=150, deadline=None)
@given(
    action=st.text(max_size=30),
    key=st.text(max_size=30),
    message=st.text(max_size=60),
    kind=st.text(max_size=20),
    field=st.text(max_size=30),
)
def test_dead_letter_pages_escape_whatever_a_producer_wrote(
    action: str, key: str, message: str, kind: str, field: str
) -> None:
    """Everything on the dead-letter pages comes from the stream, which any producer with
    XADD rights fills: rendered, none of it can open an element."""
    from corec_manager.console.app import Console
    from corec_manager.console.data import _described, _shown_fields

    console = Console(kernel=None, auth=Auth("a-long-enough-token-123"))
    fields = {"payload": orjson.dumps({"action": PWN + action, "id": PWN + key}).decode(),
              PWN + field: PWN + field}  # fmt: skip
    entry = _described({
        "ref": "1-0", "entry_id": "1-0", "stream": "s", "action": PWN + action,
        "deliveries": 1, "last_consumer": PWN, "failed_at": PWN,
        "error": {"type": PWN + kind, "message": PWN + message,
                  "details": {"last_error": {"type": PWN + kind}}},
        "fields": fields,
    })  # fmt: skip
    page = {"entries": [entry], "total": 1, "stream": "s", "next": None}
    common = {"request": _Request(), "csrf": "", "signed_in": False, "stream_in": "s"}
    listing = console.templates.get_template("dead_letters.html").render(
        **common, title="t", page=page, query={}, actions=[PWN]
    )
    entry["fields"] = _shown_fields(entry["fields"])
    one = console.templates.get_template("dead_letter.html").render(
        **common, title=PWN, entry=entry, ref=PWN
    )
    for html in (listing, one):
        assert PWN not in html
