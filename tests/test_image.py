"""The image (Containerfile) as an operator runs it (docs/deploy.md): built with podman
over a Debian base made here, its api, a zone and a provisioner started from it as
containers against the session's services, and a session played through them.

Covers: the image builds with its compiled modules, runs as a non-root user, and has
no compiler left in it; each process comes up from `outpost <command>` (the
entrypoint) and answers its probes; a player registers (provisioned by the
provisioner's container), creates a character, joins the zone's container over the
api's WebSocket and sees itself in snapshots; SIGTERM stops each container's process
gracefully (exit 0, `outpost: stopped`).

Rules: podman is Debian's, with runc (crun refuses this kernel's hybrid cgroups), the
cgroupfs manager and ulimits no higher than the machine's; `make test` installs podman,
runc and mmdebstrap, and where they are missing or cannot run a container the test is
skipped, loudly. The base (mmdebstrap's minbase with python3) and podman's storage, its
layer cache, are kept under ~/.cache/outpost-image, made here when missing: a clean
machine builds everything, only slower. The containers share the host's network (so
reach the session's services on loopback), have unique names and a zone of their own,
and are removed in `finally`; every wait is bounded.
"""

from __future__ import annotations

import faulthandler
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from server.config import Settings
from tests.helpers import bearer, eventually, scrape, total
from tests.processes import Outpost, process_env, started
from tests.world import connect, joined, new_player, snapshot_with, ws_url

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "outpost-image"
BASE_IMAGE = "localhost/outpost-base:bookworm"
# What the machine's own apt uses (deb.debian.org), security updates included.
MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
# pip in the build trusts what this machine trusts (here: a TLS-intercepting proxy's CA).
CA_BUNDLE = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
BASE_TIMEOUT_S = 600
BUILD_TIMEOUT_S = 1200

TOOLS = ("podman", "runc", "mmdebstrap")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(missing) or os.geteuid() != 0,
    reason=f"NO {' OR '.join(missing).upper() or 'ROOT'}: the image test needs Debian's "
           "podman, runc and mmdebstrap as root (`make test` installs them: "
           "apt-get install -y podman runc mmdebstrap); it could not here")


def _ulimits() -> list[str]:
    """Podman's default ulimits exceed what this machine allows a process, and runc then
    refuses to start the container: at most 1024, and never above the machine's own."""
    flags = []
    for name, limit in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, _ = resource.getrlimit(limit)
        value = 1024 if soft == resource.RLIM_INFINITY else min(1024, soft)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


PODMAN = ("podman", "--root", str(CACHE / "storage"), "--runroot", str(CACHE / "run"),
          "--runtime", shutil.which("runc") or "runc", "--cgroup-manager", "cgroupfs",
          "--events-backend", "file")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=False,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _base() -> None:
    """The base image: Debian's minbase with python3, made once and kept in the cache. A
    machine that cannot make it or run it cannot run this test: skipped, saying why."""
    if podman("image", "exists", BASE_IMAGE).returncode != 0:
        tarball = CACHE / "bookworm-python3.tar"
        if not tarball.exists():
            partial = CACHE / "partial.tar"  # renamed once whole: never half a base
            made = subprocess.run(
                ["mmdebstrap", "--variant=minbase", "--format=tar",
                 "--include=python3,python3-venv",
                 "bookworm", str(partial), *MIRRORS], capture_output=True, text=True,
                check=False, timeout=BASE_TIMEOUT_S, stdin=subprocess.DEVNULL)
            if made.returncode != 0:
                pytest.skip(f"MMDEBSTRAP COULD NOT MAKE THE BASE: {made.stderr[-2000:]}")
            partial.rename(tarball)
        imported = podman("import", str(tarball), BASE_IMAGE)
        assert imported.returncode == 0, imported.stderr
    ran = podman("run", "--rm", "--network", "host", *_ulimits(), BASE_IMAGE, "true")
    if ran.returncode != 0:
        pytest.skip(f"PODMAN CANNOT RUN A CONTAINER HERE: {ran.stderr[-2000:]}")


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """Outpost's image built from the Containerfile over the base; its id."""
    # A cold build (no cache) takes minutes, bounded by its own timeouts: pytest's
    # faulthandler_timeout would dump every thread's stack for one merely slow.
    faulthandler.cancel_dump_traceback_later()
    CACHE.mkdir(parents=True, exist_ok=True)
    _base()
    iidfile = CACHE / f"iid-{uuid.uuid4().hex[:8]}"
    network = ["--network", "host"]
    if Path(CA_BUNDLE).exists():
        network += ["--build-arg", "PIP_CERT=/run/outpost-ca.crt",
                    "-v", f"{CA_BUNDLE}:/run/outpost-ca.crt:ro"]
    if "PIP_INDEX_URL" in os.environ:
        network += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    built = podman("build", "--pull=never", *_ulimits(), *network,
                   "--build-arg", f"BASE={BASE_IMAGE}", "--iidfile", str(iidfile),
                   "-t", "localhost/outpost:test", str(ROOT), timeout=BUILD_TIMEOUT_S)
    assert built.returncode == 0, built.stdout[-6000:] + built.stderr[-3000:]
    # Each change of the sources leaves the last build's layers behind (~150 MB): those a
    # week old go, so that the cache cannot fill the disk; a build misses them only then.
    podman("image", "prune", "--force", "--filter", "until=168h")
    try:
        yield iidfile.read_text().strip()
    finally:
        iidfile.unlink()


def test_the_image_runs_as_nobody_in_particular_without_a_compiler(image: str) -> None:
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image)
    assert user.stdout.strip() == "10001:10001", user.stdout + user.stderr
    looked = podman("run", "--rm", "--network", "none", *_ulimits(), "--entrypoint",
                    "/bin/sh", image, "-c",
                    "id -u; command -v gcc cc || echo no compiler; "
                    "python -c 'import zones.simulation as s; print(s.__file__)'")
    lines = looked.stdout.splitlines()
    assert looked.returncode == 0 and len(lines) == 3, looked.stdout + looked.stderr
    assert lines[0] == "10001"
    assert lines[1] == "no compiler"
    assert lines[2].endswith(".so"), "the zone's core is not compiled: " + lines[2]


@dataclass
class Containers:
    """How the test runs `outpost` from the image: names it gave, for the cleanup."""
    image: str
    tag: str
    env: dict[str, str]
    variables: list[str]
    names: list[str]

    @asynccontextmanager
    async def outpost(self, folder: Path, *args: str) -> AsyncIterator[Outpost]:
        name = f"outpost-test-{self.tag}-{'-'.join(args)}"
        self.names.append(name)
        run = (*PODMAN, "run", "--rm", "--name", name, "--network", "host", *_ulimits(),
               *[flag for variable in self.variables for flag in ("-e", variable)],
               self.image)
        async with started(folder, *args, env=self.env, outpost=run) as process:
            yield process


@pytest.fixture
def containers(image: str, settings: Settings) -> Iterator[Containers]:
    tag = uuid.uuid4().hex[:8]
    # The processes' settings as the other subprocess tests have them, passed into the
    # containers by name (-e NAME: values stay off podman's command line); loopback only.
    env = process_env(settings, HTTP_HOST="127.0.0.1", METRICS_PORT="0",
                      WORLD_ZONE_ID=f"z{tag}")
    # Those the image sets itself are passed whatever this environment has.
    variables = sorted({name for name, value in env.items() if os.environ.get(name) != value}
                       | {"HTTP_HOST", "HTTP_PORT", "METRICS_PORT"})
    made = Containers(image, tag, env, variables, [])
    try:
        yield made
    finally:
        for name in made.names:  # gone already after a graceful stop: an error, ignored
            podman("rm", "--force", "--time", "0", name)


async def test_api_zone_and_provisioner_from_the_image_play_a_session(
    containers: Containers, tmp_path: Path,
) -> None:
    zone = containers.env["WORLD_ZONE_ID"]
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(containers.outpost(tmp_path, "api"))
        zoned = await stack.enter_async_context(containers.outpost(tmp_path, "zone", zone))
        provisioner = await stack.enter_async_context(
            containers.outpost(tmp_path, "provisioner"))
        assert zoned.banner.startswith(f"running zone {zone}; metrics http://"), zoned.banner
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=api.url, timeout=10))
        # The probes docs/deploy.md gives an orchestrator.
        for url in (f"{api.url}/healthz", f"{api.url}/readyz",
                    api.metrics_url.replace("/metrics", "/healthz"),
                    zoned.metrics_url.replace("/metrics", "/healthz"),
                    provisioner.metrics_url.replace("/metrics", "/healthz")):
            assert (await http.get(url)).status_code == 200, url

        async def zone_up() -> bool:
            zones = (await http.get("/v1/world/zones")).json()["zones"]
            return any(z["zone"] == zone and z["up"] for z in zones)

        await eventually(zone_up, f"the api to list zone {zone} up")

        player = await new_player(http, name="Boxed Bo")
        character = player["character"]
        assert character["zone_id"] == zone, character

        async def provisioned() -> bool:  # by the provisioner's container, the only one
            me = (await http.get("/v1/me", headers=bearer(player["token"]))).json()
            return bool(me["player"] and me["progression"])

        await eventually(provisioned, "the provisioner to provision the new account")
        async with connect(ws_url(api.url, player["token"])) as conn:
            assert (await joined(conn, character["id"]))["zone"] == zone
            await snapshot_with(conn, character["id"], lambda entry: True)

        # Resident memory of each idle process (docs/deploy.md, "Resources").
        for role, url in (("api", api.metrics_url), ("zone", zoned.metrics_url),
                          ("provisioner", provisioner.metrics_url)):
            rss = total(await scrape(http, url), "process_resident_memory_bytes")
            print(f"{role}: resident {rss / 2**20:.0f} MiB")

        # SIGTERM, as an orchestrator stops a container: each stops gracefully.
        # Its last line, `outpost: stopped`, comes on stdout; podman passes stdout and
        # stderr (the JSON log) on apart, so it may be followed by log lines here.
        for process in (zoned, provisioner, api):
            assert await process.stop() == 0, process.log.read_text()
            plain = [line for line in process.log.read_text().splitlines()
                     if not line.startswith("{")]
            assert plain[-1] == "outpost: stopped", process.log.read_text()
