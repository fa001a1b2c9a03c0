"""GET /openapi.json (server/http/openapi.py): the HTTP API's machine-readable contract.

Covers: the document names every route the app serves, with its methods, and nothing
it does not; it is valid OpenAPI 3.1 (schemathesis loads and checks it); and
schemathesis, generating requests from it against a live server with a real token,
finds no 5xx, no status code, content type, header or body the document does not
allow, within a fixed seed and a bounded number of examples per operation; and what
it found stays fixed (a static file name the file system chokes on is 404, not 500).

Rules: an in-process api on real sockets; schemathesis's own CLI in a subprocess, as
an outside client (it speaks plain synchronous HTTP).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from xml.etree import ElementTree

import httpx
import trio

from persistence.users import set_operator
from server.http.app import create_app
from server.process import Running
from tests.helpers import assert_error, register, use_api_loop

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
EXAMPLES = 25  # per operation and phase: enough to find what it found, quick enough to run
SEED = 20261203
# Methods every route answers on its own (Quart adds them): not part of the contract.
IMPLICIT = {"HEAD", "OPTIONS"}


def _documented_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


async def test_the_document_lists_every_route_and_only_those(
    api: Running, client: httpx.AsyncClient
) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item}
    app = create_app(api.services, api.metrics)
    served = {(_documented_path(rule.rule), method)
              for rule in app.url_map.iter_rules() for method in (rule.methods or set()) - IMPLICIT}
    assert documented == served, {"undocumented": served - documented,
                                  "not served": documented - served}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("operationId") and operation.get("summary"), (path, method)
            assert operation["responses"], (path, method)


async def test_schemathesis_finds_nothing_the_document_does_not_allow(
    api: Running, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    user = await register(client)
    use_api_loop(api)  # an operator: the console's routes answer more than 403 then
    await api.services.pg.transact(set_operator, user["username"], True)
    # A logout ends the session of the token it is sent with: fuzzed on its own, with a
    # session of its own, after everything else is fuzzed with the operator's.
    first = await schemathesis(api, tmp_path, "first", user["token"],
                               "--exclude-operation-id", "logout")
    other = await register(client)
    last = await schemathesis(api, tmp_path, "last", other["token"],
                              "--include-operation-id", "logout")
    output = first[1] + last[1]
    tested = first[0] | last[0]
    paths = (await client.get("/openapi.json")).json()["paths"]
    # Schemathesis leaves out the document's own operation.
    operations = {f"{method.upper()} {path}" for path, item in paths.items()
                  for method in item} - {"GET /openapi.json"}
    assert tested == operations, {"not tested": operations - tested}
    counts = [re.search(r"(\d+) generated, (\d+) passed", out) for out in (first[1], last[1])]
    assert all(c and c[1] == c[2] for c in counts), output[-3000:]
    generated = sum(int(c[1]) for c in counts if c)
    print(f"schemathesis: {len(tested)} operations, {generated} cases, all passed")
    assert generated > 10 * len(operations), output[-3000:]
    assert "Authentication failed" not in output, output[-3000:]


async def schemathesis(api: Running, tmp_path: Path, name: str, token: str,
                       *selection: str) -> tuple[set[str], str]:
    """Run schemathesis on the `selection` of operations with `token`: the operations
    it tested with no failure and no skip, and its output."""
    report = tmp_path / f"schemathesis-{name}.xml"
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{api.url}/openapi.json",
               "--checks", ",".join(CHECKS), "--max-examples", str(EXAMPLES),
               "--seed", str(SEED), "--workers", "1", "--request-timeout", "5",
               "--header", f"Authorization: Bearer {token}", *selection,
               "--report", "junit", "--report-junit-path", str(report)]
    with trio.fail_after(300):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                      check=False, cwd=tmp_path)  # its cache goes there
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output[-6000:]
    cases = ElementTree.parse(report).getroot().iter("testcase")
    # Each operation (and the stateful phase: "Stateful tests") with no failure, no skip.
    return {case.get("name") or "" for case in cases if not list(case)} - {"Stateful tests"}, \
        output


async def test_a_static_name_that_is_no_file_is_404_whatever_it_is(
    client: httpx.AsyncClient,
) -> None:
    """Schemathesis found a 500: a name too long for the file system (ENAMETOOLONG)."""
    for name in ("x" * 300, "é" * 200, "nothing.js", "../app.py", "%2e%2e/app.py"):
        assert_error(await client.get(f"/static/{name}"), 404, "not_found")
    served = await client.get("/static/outpost-client.js")
    assert served.status_code == 200
    assert "javascript" in served.headers["content-type"]
