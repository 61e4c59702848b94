"""The local host's HTTP triggers (devhost/http.py) over real sockets: routes matched as the Functions host
matches them, real azure.functions request and response objects, what it does with odd requests."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import azure.functions as func
import pytest

from devhost.host import HostConfig, LocalFunctionsHost

pytestmark = pytest.mark.integration


def make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    seen: list[func.HttpRequest] = []

    @app.function_name("thing")
    @app.route(route="things/{name}", methods=["GET"])
    def thing(req: func.HttpRequest) -> func.HttpResponse:
        seen.append(req)
        return func.HttpResponse(json.dumps({"name": req.route_params["name"], "params": dict(req.params),
                                             "url": req.url, "method": req.method}),
                                 mimetype="application/json", headers={"X-Seen": str(len(seen))})

    @app.function_name("special")
    @app.route(route="things/special", methods=["GET"])
    def special(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("literal", status_code=202)

    @app.function_name("broken")
    @app.route(route="broken", methods=["GET"])
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("bug with AccountKey=secret")

    app.seen = seen
    return app


@pytest.fixture
def served():
    app = make_app()
    host = LocalFunctionsHost(app, {}, HostConfig())
    url = host.serve_http()
    yield app, url
    host.stop()


def get(url: str, method: str = "GET") -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_a_route_reaches_its_function_with_a_real_request(served):
    """/api/things/a%20b?x=1&x=2: the function gets `a b`, x as "1,2" (as the host joins repeats), the URL."""
    app, url = served
    status, headers, body = get(f"{url}/api/things/a%20b?x=1&x=2&y=")
    doc = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json") and headers["X-Seen"] == "1"
    assert doc == {"name": "a b", "params": {"x": "1,2", "y": ""}, "url": f"{url}/api/things/a%20b?x=1&x=2&y=",
                   "method": "GET"}
    assert isinstance(app.seen[0], func.HttpRequest)


def test_a_literal_segment_wins_and_unknown_addresses_and_methods_are_404(served):
    _, url = served
    assert get(f"{url}/api/things/special")[:1] == (202,)
    assert get(f"{url}/api/nothing")[0] == 404
    assert get(f"{url}/things/x")[0] == 404            # outside the route prefix
    assert get(f"{url}/api/things/x", method="POST")[0] == 404


def test_a_function_that_raises_is_a_bare_500(served, caplog):
    """As the host: status 500, no body (no traceback, no exception text); the log has it."""
    _, url = served
    status, _, body = get(f"{url}/api/broken")
    assert (status, body) == (500, b"") and "HTTP function failed" in caplog.text


def test_the_route_prefix_comes_from_host_json(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}))
    host = LocalFunctionsHost(make_app(), {}, HostConfig.from_host_json(tmp_path / "host.json"))
    try:
        url = host.serve_http()
        assert get(f"{url}/things/special")[0] == 202 and get(f"{url}/api/things/special")[0] == 404
    finally:
        host.stop()


def test_requests_are_served_in_parallel(served):
    """Twenty requests from eight threads at once all answer (a threaded server, as the host serves)."""
    from concurrent.futures import ThreadPoolExecutor

    _, url = served
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: get(f"{url}/api/things/n{i}")[0], range(20)))
    assert answers == [200] * 20
