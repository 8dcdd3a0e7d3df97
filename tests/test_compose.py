"""compose.yaml and the Dockerfile cannot run here (no Docker engine), so they are read against
the code and the deployment rules: every secret from a required variable, each service only the
secrets it uses, nothing published beyond 127.0.0.1 unless asked, a pinned non-root image."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml
from sqlalchemy.engine import make_url

from agentexec.cli import main as cli
from agentexec.config import Settings

ROOT = Path(__file__).parent.parent
COMPOSE_TEXT = (ROOT / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SRC = ROOT / "examples" / "fastapi_app" / "src"
DOCKERFILE = ROOT / "Dockerfile"
#: The services that run the image (the others are stock postgres and redis).
APP_SERVICES = ("migrate", "api", "worker", "beat", "flower")

#: Each secret compose needs, and the services that use it: no other service may see it.
SECRETS: dict[str, set[str]] = {
    "POSTGRES_PASSWORD": {"migrate", "api", "worker", "beat", "db"},
    "REDIS_PASSWORD": {"api", "worker", "beat", "flower", "redis"},
    "API_TOKENS": {"api"},
    "FLOWER_BASIC_AUTH": {"flower"},
    "OPENAI_API_KEY": {"worker"},
}
#: What an operator sets (URL-safe, as the header asks).
SAMPLE_ENV = {
    "POSTGRES_PASSWORD": "pg0123456789abcdef",
    "REDIS_PASSWORD": "redis0123456789abcdef",
    "API_TOKENS": "token-0123456789abcdef,token-fedcba9876543210",
    "FLOWER_BASIC_AUTH": "admin:flower0123456789",
    "OPENAI_API_KEY": "sk-test",
}
#: Variables the example app reads itself (myapp/security.py, limits.py, errors.py).
APP_VARIABLES = {"API_TOKENS", "RATE_LIMIT", "MAX_BODY_BYTES"}

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[?-])(?P<arg>[^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY|AUTH", re.IGNORECASE)


class MissingVariable(Exception):
    """Compose's refusal: a `${VAR:?message}` whose variable is unset or empty."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's substitution of the forms this file uses, through lists and mappings:
    `${VAR}`, `${VAR:-default}`, `${VAR:?message}`, and `$$` for a literal `$`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return "$".join(_VARIABLE.sub(substitute, part) for part in value.split("$$"))


def required_variables() -> dict[str, set[str]]:
    """Each `${VAR:?message}` of compose.yaml, with the messages given for it."""
    found: dict[str, set[str]] = {}
    for match in _VARIABLE.finditer(COMPOSE_TEXT):
        if match["op"] == ":?":
            found.setdefault(match["name"], set()).add(match["arg"])
    return found


def referenced(service: str) -> set[str]:
    """The variables a service's definition (anchors resolved) interpolates."""
    return {m["name"] for m in _VARIABLE.finditer(yaml.safe_dump(SERVICES[service]))}


def dockerfile_instructions(text: str | None = None) -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments): continuations joined, comments dropped."""
    if text is None:
        text = DOCKERFILE.read_text()
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the stage the image is made of: from its last FROM on."""
    instructions = dockerfile_instructions()
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start:]


def env_instruction(arguments: str) -> dict[str, str]:
    """`ENV A=1 B="two"` as a mapping (the only ENV form the Dockerfile uses)."""
    pairs = (word.partition("=") for word in shlex.split(arguments))
    return {name: value for name, sep, value in pairs if sep}


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps a path (relative to the context) out of the build context:
    a pattern matches from the root, `**/` at any depth (negations are not used)."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            tails = ("/".join(parts[i:]) for i in range(len(parts)))
            if any(fnmatch.fnmatchcase(tail, pattern[3:]) for tail in tails):
                return True
        elif fnmatch.fnmatchcase(relative, pattern.rstrip("/")):
            return True
    return False


def test_every_service_is_there_and_depends_on_existing_ones() -> None:
    assert {"migrate", "api", "worker", "beat", "flower", "db", "redis"} <= set(SERVICES)
    for service in SERVICES.values():
        assert set(service.get("depends_on", {})) <= set(SERVICES)


def _settings_names() -> set[str]:
    names = {"REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "FLOWER_BASIC_AUTH"}
    names |= {f"AGENTEXEC_{field.upper()}" for field in Settings.model_fields}
    return names


def test_environment_uses_only_settings_the_code_reads() -> None:
    for name in APP_SERVICES:
        env = interpolate(SERVICES[name]["environment"], SAMPLE_ENV)
        assert set(env) <= _settings_names() | APP_VARIABLES, name
        if "REDIS_URL" in env:
            Settings(_env_file=None, **{"redis_url": env["REDIS_URL"]})


def test_redis_url_authenticates_against_the_redis_service() -> None:
    """redis-py must read the password back out of the URL: no reserved character breaks it."""
    for name in ("api", "worker", "beat", "flower"):
        url = interpolate(SERVICES[name]["environment"]["REDIS_URL"], SAMPLE_ENV)
        kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"]) == ("redis", 6379), name
        assert kwargs["password"] == SAMPLE_ENV["REDIS_PASSWORD"], name


def test_database_url_matches_the_db_service_and_an_installed_driver() -> None:
    db = interpolate(SERVICES["db"]["environment"], SAMPLE_ENV)
    for name in ("migrate", "api", "worker", "beat"):
        url = make_url(interpolate(SERVICES[name]["environment"]["DATABASE_URL"], SAMPLE_ENV))
        assert url.drivername == "postgresql+psycopg", name
        assert (url.host, url.port, url.database) == ("db", 5432, db["POSTGRES_DB"]), name
        assert (url.username, url.password) == (db["POSTGRES_USER"], db["POSTGRES_PASSWORD"])
    assert importlib.util.find_spec("psycopg") is not None


def test_commands_point_at_modules_that_exist() -> None:
    sys.path.insert(0, str(APP_SRC))
    try:
        api = shlex.split(SERVICES["api"]["command"])
        module, _, attr = api[1].partition(":")
        assert api[0] == "uvicorn" and importlib.util.find_spec(module) is not None
        assert attr == "app"
        worker = shlex.split(SERVICES["worker"]["command"])
        assert worker[:2] == ["python", "-m"] and importlib.util.find_spec(worker[2])
    finally:
        sys.path.remove(str(APP_SRC))
    flower = shlex.split(SERVICES["flower"]["command"])
    assert flower[:4] == ["agentexec", "flower", "-A", worker[2]]
    migrate = shlex.split(SERVICES["migrate"]["command"])
    assert migrate == ["agentexec", "db", "upgrade", "-A", worker[2]]
    assert shlex.split(SERVICES["beat"]["command"]) == ["agentexec", "beat", "-A", worker[2]]
    assert SERVICES["beat"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    for name in ("api", "worker"):
        probe = SERVICES[name]["healthcheck"]["test"]
        assert probe[1:5] == ["agentexec", "check", "-A", worker[2]]
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "--allow-no-workers" in SERVICES["api"]["healthcheck"]["test"]
    for name in APP_SERVICES:
        assert SERVICES[name]["build"] == "."
    for name in ("migrate", "api", "worker", "beat"):
        assert SERVICES[name]["working_dir"] == "/app/examples/fastapi_app/src"
    assert DOCKERFILE.exists()


def test_the_agentexec_commands_compose_runs_exist() -> None:
    db = cli.commands["db"]
    assert isinstance(db, click.Group) and "upgrade" in db.commands
    assert "check" in cli.commands and "beat" in cli.commands
    if "flower" not in cli.commands:
        pytest.skip("`agentexec flower` (the flower service's command) is not in the CLI yet")


def test_api_and_flower_listen_on_localhost_unless_told_otherwise() -> None:
    assert SERVICES["api"]["ports"] == ["${API_BIND:-127.0.0.1}:8000:8000"]
    assert SERVICES["flower"]["ports"] == ["${FLOWER_BIND:-127.0.0.1}:5555:5555"]
    assert interpolate(SERVICES["api"]["ports"], {}) == ["127.0.0.1:8000:8000"]
    assert interpolate(SERVICES["flower"]["ports"], {}) == ["127.0.0.1:5555:5555"]
    assert interpolate(SERVICES["api"]["ports"], {"API_BIND": "0.0.0.0"}) == ["0.0.0.0:8000:8000"]
    # The database and Redis are reached over compose's network only.
    assert {name for name, service in SERVICES.items() if "ports" in service} == {"api", "flower"}


def test_redis_requires_a_password_and_never_evicts() -> None:
    service = SERVICES["redis"]
    argv = shlex.split(interpolate(service["command"], SAMPLE_ENV))
    # First word redis-server: the image's entrypoint then drops root for the redis user.
    assert argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--requirepass"] == SAMPLE_ENV["REDIS_PASSWORD"]
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert service["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_redis_healthcheck_authenticates() -> None:
    """An unauthenticated `redis-cli ping` gets NOAUTH, and exits 0 all the same."""
    test = SERVICES["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    probe = test[1]
    assert "$$REDIS_PASSWORD" in probe
    assert "REDISCLI_AUTH=" in probe or " -a " in probe
    assert "redis-cli" in probe and "PONG" in probe


def test_no_literal_password_anywhere() -> None:
    required = required_variables()
    assert set(SECRETS) <= set(required)
    for name, messages in required.items():
        assert all(message.strip() for message in messages), f"{name} needs a message"
    # Every `${SECRET...}` is the required form: no default value can stand in for it.
    for match in _VARIABLE.finditer(COMPOSE_TEXT):
        if match["name"] in SECRETS:
            assert match["op"] == ":?", match[0]
    for name, service in SERVICES.items():
        for key, value in service.get("environment", {}).items():
            if _SECRET_NAME.search(key):
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", value), (name, key, value)
    # Credentials inside URLs and command lines are references too.
    for password in re.findall(r"://[^/\s:@]*:([^@\s]+)@", COMPOSE_TEXT):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), password
    redis_argv = shlex.split(SERVICES["redis"]["command"])
    assert redis_argv[redis_argv.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")


def test_compose_refuses_to_start_without_each_secret() -> None:
    for secret in SECRETS:
        env = {name: value for name, value in SAMPLE_ENV.items() if name != secret}
        with pytest.raises(MissingVariable, match=secret):
            interpolate(COMPOSE, env)
    interpolate(COMPOSE, SAMPLE_ENV)


def test_each_service_gets_only_the_secrets_it_uses() -> None:
    for secret, users in SECRETS.items():
        seen_by = {name for name in SERVICES if secret in referenced(name)}
        assert seen_by == users, secret
    # Flower reads Redis only; the migration job opens the database only.
    assert set(SERVICES["flower"]["environment"]) == {"REDIS_URL", "FLOWER_BASIC_AUTH"}
    assert set(SERVICES["migrate"]["environment"]) == {"DATABASE_URL"}
    assert "OPENAI_API_KEY" in SERVICES["worker"]["environment"]


def test_the_header_lists_every_variable_to_set() -> None:
    header = []
    for line in COMPOSE_TEXT.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    for name in required_variables():
        assert f"{name}=" in "\n".join(header), name


def test_flower_requires_basic_auth_from_the_environment() -> None:
    env = SERVICES["flower"]["environment"]
    # `${VAR:?message}`: compose refuses to start without it.
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for service in SERVICES.values():
        assert "FLOWER_UNAUTHENTICATED_API" not in service.get("environment", {})
        assert "unauthenticated" not in str(service.get("command", "")).lower()


def test_flower_runs_where_its_user_may_write() -> None:
    """Without DATABASE_URL, importing myapp.worker creates ./agents.db (myapp/db.py): the
    image's working directory is read-only to its user, so Flower runs from /tmp."""
    assert "DATABASE_URL" not in SERVICES["flower"]["environment"]
    assert SERVICES["flower"]["working_dir"] == "/tmp"
    probe = " ".join(SERVICES["flower"]["healthcheck"]["test"])
    assert "5555/healthcheck" in probe


def test_image_services_drop_privileges() -> None:
    for name in APP_SERVICES:
        assert SERVICES[name]["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in SERVICES[name]["security_opt"], name


def test_redis_and_postgres_keep_their_data_in_named_volumes() -> None:
    volumes = set(COMPOSE["volumes"])

    def mounts(service: str) -> dict[str, str]:
        pairs = (entry.split(":", 1) for entry in SERVICES[service]["volumes"])
        return {target: source for source, target in pairs}

    assert mounts("redis")["/data"] in volumes
    assert "--appendonly yes" in SERVICES["redis"]["command"]
    assert mounts("db")["/var/lib/postgresql/data"] in volumes


def test_worker_grace_period_covers_the_shutdown_timeout() -> None:
    """Docker must not SIGKILL a worker that is still requeueing its agents."""
    grace = SERVICES["worker"]["stop_grace_period"]
    assert grace.endswith("s"), grace
    timeout = float(SERVICES["worker"]["environment"].get("AGENTEXEC_SHUTDOWN_TIMEOUT", 0) or 0)
    assert float(grace[:-1]) >= (timeout or Settings().shutdown_timeout) + 5


def test_dockerfile_pins_its_images() -> None:
    images = []
    stages = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword == "FROM":
            words = arguments.split()
            images.append(words[0])
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        elif keyword == "COPY":
            images += [w.split("=", 1)[1] for w in arguments.split() if w.startswith("--from=")]
    images = [image for image in images if image not in stages]
    assert "ghcr.io/astral-sh/uv" in {image.partition(":")[0] for image in images}
    for image in images:
        assert ":latest" not in image and ":" in image, image
        name, _, tag = image.partition(":")
        if name == "ghcr.io/astral-sh/uv":
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), image
        if name == "python":
            assert re.match(r"\d+\.\d+[.-]", tag), image


def test_dockerfile_runs_as_a_user_that_is_not_root() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the image runs as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}, users[-1]
    created = " ".join(arguments for keyword, arguments in final_stage() if keyword == "RUN")
    assert f"--uid {user}" in created, "the user is created with a fixed uid"


def test_dockerfile_probes_the_api_and_runs_it_by_default() -> None:
    stage = dict(final_stage())
    options, _, command = stage["HEALTHCHECK"].partition("CMD ")
    assert "--timeout=" in options, "a hung probe must count as a failure"
    assert yaml.safe_load(command) == SERVICES["api"]["healthcheck"]["test"][1:]
    assert yaml.safe_load(stage["CMD"]) == shlex.split(SERVICES["api"]["command"])


def test_dockerfile_environment_matches_compose() -> None:
    stage = final_stage()
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        assert keyword not in {"ARG", "ENV"} or not _SECRET_NAME.search(arguments), arguments
        if keyword == "ENV":
            env.update(env_instruction(arguments))
    assert env["PATH"].split(":")[0] == "/app/.venv/bin"
    assert env["PYTHONPATH"] == "/app/" + APP_SRC.relative_to(ROOT).as_posix()
    workdirs = [arguments for keyword, arguments in stage if keyword == "WORKDIR"]
    assert workdirs[-1] == SERVICES["api"]["working_dir"] == env["PYTHONPATH"]


def test_dockerfile_installs_the_lock_with_the_same_extras_each_time() -> None:
    """A later sync with fewer extras would remove what an earlier one installed."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = extras["optional-dependencies"]
    runs = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"]
    assert not any("pip install" in run for run in runs)
    syncs = [shlex.split(run[run.index("uv sync") :]) for run in runs if "uv sync" in run]
    assert len(syncs) == 2 and "--no-install-project" in syncs[0]
    for argv in syncs:
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(argv), argv
        assert "--all-extras" not in argv
    chosen = [{argv[i + 1] for i, word in enumerate(argv) if word == "--extra"} for argv in syncs]
    assert chosen[0] == chosen[1] == {"postgres", "example", "otel"}
    assert chosen[0] <= set(extras)


def test_the_example_extra_has_what_the_app_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", spec)[0] for spec in extras["optional-dependencies"]["example"]}
    assert {"fastapi", "uvicorn", "websockets", "slowapi"} <= names
    imports = " ".join(path.read_text() for path in (APP_SRC / "myapp").glob("*.py"))
    assert ("httpx" in names) == bool(re.search(r"^\s*(import|from) httpx", imports, re.M))


def test_dockerignore_keeps_out_history_venvs_and_tests_but_not_what_is_copied() -> None:
    kept_out = [".git", ".venv", "tests", ".env", "agentexec/__pycache__", "agentexec/x.pyc"]
    kept_out += ["examples/fastapi_app/tests", "examples/fastapi_app/src/agents.db", "bench"]
    for path in kept_out:
        assert dockerignored(path), path
    sources = []
    for keyword, arguments in dockerfile_instructions():
        words = [w for w in arguments.split() if not w.startswith("--")]
        if keyword == "COPY" and "--from=" not in arguments:
            sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), source
