"""docker-compose.yml, checked without a Docker engine: parsed with PyYAML and held against the
repository, the Dockerfile, the Mosquitto files, deploy/env.example and the API's settings."""

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.settings import Settings
from citykey_protocol.transport import BrokerAddress
from firmware_sim.fleet import gateway_id

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / "deploy" / "env.example"
ACL_FILE = REPO / "deploy" / "mosquitto" / "acl"

USER_PROVIDED = frozenset({"deploy/mosquitto/passwords", ".env"})
"""Files the operator creates (secrets, never committed); everything else must be in the repo."""

EXPECTED_SERVICES = frozenset(
    {"postgres", "mosquitto", "broker-init", "migrate", "keys-init", "api", "gateways"}
)
MUST_HAVE_HEALTHCHECK = ("api", "postgres", "mosquitto")
CONDITIONS = frozenset({"service_started", "service_healthy", "service_completed_successfully"})
MOSQUITTO_CONF_TARGET = "/mosquitto/config/mosquitto.conf"

_VARIABLE = re.compile(
    r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
)

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    assert found, "docker-compose.yml has no services"
    return found


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep, f"deploy/env.example: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${...} substitution (the forms this file uses) and $$ unescaping."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        if op in (":?", "?"):
            assert name in env, f"${{{name}}} is required: {arg}"
        return env.get(name, "")

    return _VARIABLE.sub(replace, value).replace("$$", "$")


def _environment(service: Service) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def _bind_mounts(service: Service) -> list[tuple[str, str]]:
    """(host source, container target) of every bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
            if source.startswith((".", "/", "~")):
                mounts.append((source, target))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def _mount_targets(service: Service) -> set[str]:
    """Container paths of every mount (bind or volume) of a service."""
    targets = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            targets.add(volume.split(":")[1] if ":" in volume else volume)
        else:
            targets.add(volume["target"])
    return targets


def _named_volumes(service: Service) -> list[str]:
    names = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source = volume.partition(":")[0]
            if not source.startswith((".", "/", "~")) and ":" in volume:
                names.append(source)
        elif volume.get("type") == "volume":
            names.append(volume["source"])
    return names


def _depends_on(service: Service) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _command(service: Service) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _option(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def _config_lines(path: Path) -> list[str]:
    """Active lines of a Mosquitto-style file: comments and blanks removed."""
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]


def test_the_expected_services_are_there(services: dict[str, Service]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_every_service_has_an_image_or_a_buildable_context(services: dict[str, Service]) -> None:
    for name, service in services.items():
        build = service.get("build")
        assert service.get("image") or build, f"{name}: neither image nor build"
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"


def test_the_dockerfile_copies_only_files_that_exist() -> None:
    dockerfile = REPO / "deploy" / "Dockerfile"
    copies = [line.split()[1:] for line in _config_lines(dockerfile) if line.startswith("COPY ")]
    assert copies, "the Dockerfile copies nothing"
    for words in copies:
        sources = [word for word in words[:-1] if not word.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    lines = _config_lines(dockerfile)
    assert lines[0] == "FROM python:3.11-slim"
    users = [line for line in lines if line.startswith("USER ")]
    assert users, "the image must not run as root"
    assert users[-1] not in ("USER root", "USER 0"), "the image must not run as root"


def test_every_bind_mount_exists_or_is_documented_as_user_created(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        for source, target in _bind_mounts(service):
            assert "${" not in source, f"{name}: bind source {source} depends on a variable"
            path = (REPO / source).resolve()
            assert path.is_relative_to(REPO), f"{name}: {source} is outside the repository"
            relative = path.relative_to(REPO).as_posix()
            if relative in USER_PROVIDED:
                continue
            assert path.exists(), f"{name}: {source} (mounted at {target}) is not in the repo"


def test_user_created_files_are_kept_out_of_git() -> None:
    ignored = _config_lines(REPO / "deploy" / "mosquitto" / ".gitignore")
    assert "passwords" in ignored
    readme = (REPO / "deploy" / "mosquitto" / "README.md").read_text()
    assert "mosquitto_passwd" in readme


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Service]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in _named_volumes(service):
            assert volume in declared, f"{name}: volume {volume} is not declared"


def test_depends_on_names_services_with_a_fitting_condition(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition in CONDITIONS, f"{name}: unknown condition {condition}"
            other = services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in other, f"{name} waits for {dependency} to be healthy"
            if condition == "service_completed_successfully":
                assert other.get("restart", "no") == "no", f"{dependency} must be one-shot"


def test_api_postgres_and_mosquitto_have_healthchecks(services: dict[str, Service]) -> None:
    for name in MUST_HAVE_HEALTHCHECK:
        healthcheck = services[name].get("healthcheck")
        assert isinstance(healthcheck, dict), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name}'s healthcheck is disabled"
        test = healthcheck.get("test")
        assert isinstance(test, list), f"{name}: {test}"
        assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert any("/healthz" in part for part in services["api"]["healthcheck"]["test"])


def test_mounted_mosquitto_config_sets_tcp_nodelay(services: dict[str, Service]) -> None:
    mosquitto = services["mosquitto"]
    mounts = dict((target, source) for source, target in _bind_mounts(mosquitto))
    assert MOSQUITTO_CONF_TARGET in mounts, "mosquitto.conf is not mounted"
    lines = _config_lines(REPO / mounts[MOSQUITTO_CONF_TARGET])
    assert "set_tcp_nodelay true" in lines
    assert "allow_anonymous false" in lines
    # The files and the directory the config names are the ones compose mounts there.
    targets = _mount_targets(mosquitto)
    # The compose broker uses the dynamic security plugin; its file sits in the data volume.
    for key in ("plugin_opt_config_file", "persistence_location"):
        [value] = [line.split(maxsplit=1)[1] for line in lines if line.split()[0] == key]
        folder = value.rstrip("/") if key == "persistence_location" else str(Path(value).parent)
        assert folder in targets, f"{key} {value} is not mounted into the container"


def test_every_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    example = _env_example()
    text = COMPOSE_FILE.read_text()
    for match in _VARIABLE.finditer(text):
        if match["op"] in (":-", "-"):
            continue  # has a default
        assert match["name"] in example, f"${{{match['name']}}} is not in deploy/env.example"


def test_secrets_come_from_variables_only(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "PSEUDONYM_KEY")):
                assert value.startswith("${"), f"{name}: {key} is written in the file"
                assert ":?" in value, f"{name}: {key} must not have a default"
            for url in re.findall(r"\w+(?:\+\w+)?://[^@\s]+@", value):
                assert "${" in url, f"{name}: {key} carries a literal password"


def test_api_settings_are_valid_in_production_mode(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With env.example's values the API's settings validate in production mode: OpenID
    Connect, the pseudonym key and the session secret all come from .env."""
    env = _env_example()
    api = {k: _interpolate(v, env) for k, v in _environment(services["api"]).items()}
    assert api["CITYKEY_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert BrokerAddress.parse(api["CITYKEY_MQTT_URL"]).username == "citykey-api"
    assert api["CITYKEY_GENERATE_KEYS"] == "false"
    assert api["CITYKEY_MODE"] == "production"
    assert api["CITYKEY_DEV_IDENTITY"] == "false"
    for key in [k for k in os.environ if k.startswith("CITYKEY_")]:
        monkeypatch.delenv(key)
    for key, value in api.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.mode == "production"
    assert settings.oidc_configured
    assert settings.oidc_issuer == env["CITYKEY_OIDC_ISSUER"]
    assert settings.pseudonym_key.get_secret_value() == env["CITYKEY_PSEUDONYM_KEY"]
    assert settings.session_secret.get_secret_value() == env["CITYKEY_SESSION_SECRET"]
    assert settings.broker.username == "citykey-api"
    assert not settings.broker.anonymous
    # Without any one of the .env secrets, production refuses to start.
    for secret in (
        "CITYKEY_OIDC_CLIENT_SECRET",
        "CITYKEY_PSEUDONYM_KEY",
        "CITYKEY_SESSION_SECRET",
    ):
        with monkeypatch.context() as patch:
            patch.delenv(secret)
            with pytest.raises(ValueError, match=secret.removeprefix("CITYKEY_")):
                Settings()
    # The one-shot jobs share the API's database and key directory.
    migrate = _environment(services["migrate"])
    assert migrate["CITYKEY_DATABASE_URL"] == _environment(services["api"])["CITYKEY_DATABASE_URL"]
    assert _environment(services["keys-init"])["CITYKEY_KEY_DIR"] == api["CITYKEY_KEY_DIR"]
    assert set(_named_volumes(services["keys-init"])) & set(_named_volumes(services["api"]))


def test_commands(services: dict[str, Service]) -> None:
    assert _command(services["migrate"]) == ["citykey", "migrate"]
    assert "citykey keys init" in " ".join(_command(services["keys-init"]))
    api = _command(services["api"])
    assert api[:2] == ["citykey", "serve"]
    assert _option(api, "--host") == "0.0.0.0"  # noqa: S104 (inside its container)


def test_simulated_gateway_matches_the_broker_acl_and_the_api(
    services: dict[str, Service],
) -> None:
    env = _env_example()
    command = [_interpolate(part, env) for part in _command(services["gateways"])]
    assert command[0] == "citykey-sim"
    assert _option(command, "--jwks-url") == "http://api:8000/.well-known/jwks.json"
    api_env = {k: _interpolate(v, env) for k, v in _environment(services["api"]).items()}
    assert _option(command, "--issuer") == api_env["CITYKEY_ISSUER"]
    # The ACL gives a broker user the topics of the gateway with the same name only.
    assert _option(command, "--gateways") == "1"
    broker = BrokerAddress.parse(_option(command, "--mqtt-url"))
    assert broker.username == gateway_id(_option(command, "--prefix"), 1)
    assert broker.host == "mosquitto"
    acl = _config_lines(ACL_FILE)
    assert "user citykey-api" in acl
    assert "pattern read citykey/v1/gw/%u/cmd" in acl
    healthcheck = " ".join(services["mosquitto"]["healthcheck"]["test"])
    assert "-u healthcheck" in healthcheck
    assert "user healthcheck" in acl


def test_broker_init_writes_the_users_the_stack_logs_in_with(
    services: dict[str, Service], tmp_path: Path
) -> None:
    """broker-init writes the dynamic security file where the broker reads it, before the
    broker starts, with the passwords every other service logs in with."""
    import base64
    import hashlib
    import json

    from api.broker_accounts.bootstrap import main as bootstrap

    env = _env_example()
    init = services["broker-init"]
    assert _depends_on(services["mosquitto"]) == {"broker-init": "service_completed_successfully"}
    assert init.get("user") == "1883:1883"  # the broker's uid in eclipse-mosquitto
    command = _command(init)
    assert command[:3] == ["python", "-m", "api.broker_accounts.bootstrap"]
    target = Path(command[3])
    [volume] = _named_volumes(init)
    mounted = {v.split(":")[0]: v.split(":")[1] for v in init["volumes"]}
    broker_mounts = {v.split(":")[0]: v.split(":")[1] for v in services["mosquitto"]["volumes"]}
    conf = _config_lines(REPO / "deploy" / "mosquitto" / "mosquitto-dynsec.conf")
    [plugin_file] = [line.split()[1] for line in conf if line.startswith("plugin_opt_config_file")]
    assert target.relative_to(mounted[volume]) == Path(plugin_file).relative_to(
        broker_mounts[volume]
    ), "broker-init writes a file the broker does not read"

    init_env = {k: _interpolate(v, env) for k, v in _environment(init).items()}
    written = tmp_path / "dynamic-security.json"
    assert bootstrap([str(written), *command[4:]], init_env) == 0
    users = {c["username"]: c for c in json.loads(written.read_text())["clients"]}

    def logs_in(user: str | None, password: str | None) -> bool:
        assert user is not None
        assert password is not None
        client = users[user]
        digest = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(client["salt"]), client["iterations"]
        )
        return bool(base64.b64encode(digest).decode() == client["password"])

    api_env = {k: _interpolate(v, env) for k, v in _environment(services["api"]).items()}
    for url in (api_env["CITYKEY_MQTT_URL"], api_env["CITYKEY_BROKER_ADMIN_URL"]):
        address = BrokerAddress.parse(url)
        assert logs_in(address.username, address.password), f"{address.username} cannot log in"
    sim = [_interpolate(part, env) for part in _command(services["gateways"])]
    address = BrokerAddress.parse(_option(sim, "--mqtt-url"))
    assert logs_in(address.username, address.password), "the simulated gateway cannot log in"
    health = _interpolate(_environment(services["mosquitto"])["MQTT_HEALTHCHECK_PASSWORD"], env)
    assert logs_in("healthcheck", health)
