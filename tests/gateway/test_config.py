"""The gateway's configuration file: what it accepts, and a clear error for the rest."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from proctor.cli.gateway import server_name_for
from proctor.config import Settings
from proctor.errors import ConfigError
from proctor.gateway import Gateway, load_gateway_config, parse_gateway_config
from proctor.gateway.config import fill_secrets, secret_names
from proctor.gateway.http import build_http_app
from proctor.policy import Sensitivity
from proctor.runtime import init_home, open_runtime


def test_a_full_config_reads_into_upstreams_labels_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("""
gateway:
  public_url: https://mcp.acme.example
  max_message_bytes: 65536
  max_answer_bytes: 131072
  call_timeout_seconds: 5
upstreams:
  git:
    command: [uvx, mcp-server-git, --repository, /srv/repos/app]
    env: {GITHUB_TOKEN: "${secret:github-token}"}
    labels: {sensitivity: internal}
    tools:
      git_commit: {sensitivity: confidential, destination: github.com}
  crm:
    url: https://crm.vendor.example/mcp
    headers: {Authorization: "Bearer ${secret:crm-token}"}
    labels: {connector: salesforce}
""")
    config = load_gateway_config(path)
    assert (config.public_url, config.max_message_bytes, config.max_answer_bytes,
            config.call_timeout_seconds) == ("https://mcp.acme.example", 65536, 131072, 5)
    git, crm = config.upstream("git"), config.upstream("crm")
    assert git.url is None and crm.url == "https://crm.vendor.example/mcp"
    commit = git.tools["git_commit"]
    assert (commit.sensitivity, commit.destination) == (Sensitivity.CONFIDENTIAL, "github.com")
    assert "git_log" not in git.tools and git.labels.sensitivity is Sensitivity.INTERNAL
    assert secret_names(crm.headers["Authorization"]) == ["crm-token"]
    assert fill_secrets(crm.headers["Authorization"], {"crm-token": "abc"}) == "Bearer abc"


@pytest.mark.parametrize(("document", "says"), [
    ({"upstreams": {"Git": {"command": ["x"]}}}, "upstream `Git`"),
    ({"upstreams": {"a__b": {"command": ["x"]}}}, "single `_`"),
    ({"upstreams": {"git\n": {"command": ["x"]}}}, "single `_`"),
    # `crm_`'s prompt `x` would be `crm___x` on /mcp, which is `crm`'s `_x`
    ({"upstreams": {"crm_": {"command": ["x"]}}}, "not ending in `_`"),
    ({"upstreams": {"git": {"command": ["x"], "url": "https://x"}}}, "not both"),
    ({"upstreams": {"git": {"command": ["x"], "headers": {"X-Key": "v"}}}}, "HTTP upstream"),
    ({"upstreams": {"crm": {"url": "https://x", "headers": {"DPoP": "v"}}}}, "set by the gateway"),
    ({"upstreams": {"git": {"command": ["x"], "labels": {"sensitivity": "secret"}}}},
     "sensitivity `secret`"),
    ({"gateway": {"max_message_bytes": -1}}, "`max_message_bytes` must be a positive integer"),
    ({"gateway": {"max_answer_bytes": 0}}, "`max_answer_bytes` must be a positive integer"),
    # YAML's `.nan` passed `<= 0` (every comparison with NaN is false); `.inf` is no limit
    ({"gateway": {"call_timeout_seconds": math.nan}}, "`call_timeout_seconds` must be a "
                                                      "positive number"),
    ({"gateway": {"approval_timeout_seconds": math.inf}}, "`approval_timeout_seconds` must"),
    ({"gateway": {"call_timeout": 3}}, "unknown key `call_timeout`"),
    ({"gateway": {"public_url": "ftp://x"}}, "`public_url` must be an http(s) URL"),
    ({"upstreams": {"git": {"command": ["x"], "env": {"1BAD": "v"}}}}, "name `1BAD`"),
    ({"gateway": {"trusted_proxies": ["*"]}}, "would let any client name any address"),
    ({"gateway": {"trusted_proxies": ["proxy.acme.example"]}},
     "entry `proxy.acme.example` is not an IP address or network"),
    ({"gateway": {"trusted_proxies": "10.0.0.2"}}, "must be a list of IP addresses"),
])
def test_a_bad_config_names_what_is_wrong(document: object, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_gateway_config(document)
    assert says in refused.value.message


def test_every_prefixed_name_resolves_to_the_server_that_listed_it() -> None:
    # the shared endpoint's names are `<server>__<name>`: no accepted server name may
    # make one server's name read as another's (a trailing `_`: `crm_` + `__x`)
    from proctor.gateway.views import PREFIX_SEPARATOR, View

    names = ["crm", "crm_", "a.b", "a_b", "a-", "0"]
    accepted = [n for n in names
                if _accepts({"upstreams": {n: {"command": ["x"]}}})]
    assert "crm" in accepted and "a_b" in accepted
    view = View(tuple(accepted), prefixed=True)
    for server in accepted:
        for name in ("x", "_x", "x__y"):
            assert view.resolve(f"{server}{PREFIX_SEPARATOR}{name}") == (server, name)


def _accepts(document: object) -> bool:
    try:
        parse_gateway_config(document)
    except ConfigError:
        return False
    return True


def test_forwarded_headers_are_read_from_the_trusted_proxies_only() -> None:
    from proctor.listening import forwarded_options

    assert parse_gateway_config({}).trusted_proxies == ()
    assert forwarded_options(()) == {"proxy_headers": False, "forwarded_allow_ips": None}
    named = parse_gateway_config({"gateway": {"trusted_proxies": ["10.0.0.2", "fd00::/8"]}})
    assert forwarded_options(named.trusted_proxies) == {
        "proxy_headers": True, "forwarded_allow_ips": ["10.0.0.2", "fd00::/8"]}


def test_an_unreadable_or_oversized_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_gateway_config(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (300 * 1024))
    with pytest.raises(ConfigError, match="larger than"):
        load_gateway_config(big)


@pytest.mark.parametrize(("command", "name"), [
    (["uvx", "mcp-server-git", "--repository", "/r"], "git"),
    (["python", "-m", "mcp_server_time"], "time"),
    (["/usr/local/bin/github-mcp"], "github-mcp"),
])
def test_a_server_is_named_after_its_command(command: list[str], name: str) -> None:
    assert server_name_for(command) == name


@pytest.mark.parametrize("listen", ["0.0.0.0:8765", "[::]:8765", "192.168.1.20:8765",
                                    "mcp.internal:8765"])
def test_the_http_gateway_refuses_to_listen_beyond_loopback_without_public_url(
        listen: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_gateway_config({"gateway": {"listen": listen}}).check_listen()
    assert "needs `public_url` in the gateway config" in refused.value.message
    parse_gateway_config({"gateway": {"listen": listen,
                                      "public_url": "https://mcp.acme.example"}}).check_listen()


@pytest.mark.parametrize(("listen", "address"), [
    ("127.0.0.1:8765", "http://127.0.0.1:8765"), ("localhost:9000", "http://localhost:9000"),
    ("[::1]:9000", "http://[::1]:9000")])
def test_on_loopback_agents_address_the_listening_address(listen: str, address: str) -> None:
    config = parse_gateway_config({"gateway": {"listen": listen}})
    config.check_listen()
    assert config.address == address
    named = parse_gateway_config({"gateway": {"listen": listen,
                                              "public_url": "https://mcp.acme.example/"}})
    assert named.address == "https://mcp.acme.example"


@pytest.mark.anyio
async def test_the_http_gateway_app_is_not_built_to_listen_beyond_loopback_without_public_url(
        database_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=database_url,
                        policy_dir=tmp_path / "home" / "policies", trust_domain="acme.example")
    init_home(settings)
    runtime = open_runtime(settings)
    try:
        exposed = parse_gateway_config({"gateway": {"listen": "0.0.0.0:8765"}})
        with pytest.raises(ConfigError, match="needs `public_url`"):
            build_http_app(Gateway.on(runtime, exposed))
        local = parse_gateway_config({"gateway": {"listen": "127.0.0.1:9001"}})
        app = build_http_app(Gateway.on(runtime, local))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1:9001") as client:
            metadata = await client.get("/.well-known/oauth-protected-resource/mcp",
                                        headers={"Host": "attacker.example"})
        assert metadata.json()["resource"] == "http://127.0.0.1:9001/mcp"
    finally:
        runtime.close()
