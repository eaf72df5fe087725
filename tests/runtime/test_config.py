"""atom.yaml: defaults, file values, ATOM_* environment overrides, command-line overrides, and located
errors for every problem at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from atom.cli import main
from atom.config import env_keys, find_config, load_config
from atom.errors import LoadError


def write(tmp_path: Path, text: str, name: str = "atom.yaml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def test_defaults_without_a_file() -> None:
    cfg = load_config(None, env={})
    assert (cfg.server.host, cfg.server.port, cfg.server.https_port) == ("127.0.0.1", 9090, 9093)
    assert cfg.limits.max_request_bytes == 10 * 1024 * 1024
    assert cfg.limits.max_wait_ms == 180000
    assert cfg.limits.max_concurrent_per_listener == 100
    assert cfg.limits.rate_limit is None
    assert cfg.purge_days == 30 and cfg.shutdown_grace == 30.0
    assert cfg.auth["type"] == "none"
    assert cfg.store_path == Path(".atom") / "atom.db"
    assert str(cfg.components) == "processes"


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: atom-1
        components: ./flows
        data_dir: ./state
        server: {port: 9191, base_url: "https://atom.example.com/"}
        limits: {max_request_bytes: 2MiB, max_wait_ms: 5000, rate_limit: {requests: 10, per: 1s}}
        callbacks: {secret: "${CB_SECRET}"}
        purge_days: 7
        log: {format: json, level: debug}
        shutdown: {grace_period: 10s}
        watch: {enabled: false}
    """)
    cfg = load_config(path, env={"CB_SECRET": "s"})
    assert cfg.name == "atom-1"
    assert cfg.components == tmp_path / "flows"
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.server.port == 9191 and cfg.server.base_url == "https://atom.example.com/"
    assert cfg.limits.max_request_bytes == 2 * 1024 * 1024 and cfg.limits.max_wait_ms == 5000
    assert cfg.limits.rate_limit == {"requests": 10, "per": 1.0, "by": "client"}
    assert cfg.callbacks.secret == "s"
    assert (cfg.purge_days, cfg.log.format, cfg.log.level, cfg.shutdown_grace) == (7, "json", "debug", 10.0)
    assert cfg.watch_enabled is False


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 9191}\ndata_dir: ./state\n")
    env = {"ATOM_SERVER_PORT": "7070", "ATOM_LIMITS_MAX_REQUEST_BYTES": "1kb", "ATOM_DATA_DIR": "/var/lib/atom",
           "ATOM_AUTH_TYPE": "basic", "ATOM_AUTH_USERS": "ops=pw1,ci=pw2", "ATOM_AUTH_TOKENS": "a,b",
           "ATOM_LOG_ACCESS": "true", "ATOM_URL": "ignored: not a configuration key"}
    cfg = load_config(path, env=env)
    assert cfg.server.port == 7070
    assert cfg.limits.max_request_bytes == 1000
    assert cfg.data_dir == Path("/var/lib/atom")
    assert cfg.auth["users"] == {"ops": "pw1", "ci": "pw2"} and cfg.auth["tokens"] == ["a", "b"]
    assert cfg.log.access is True
    # command-line options beat the environment
    cfg = load_config(path, env=env, overrides={"server.port": 6060, "server.host": None})
    assert cfg.server.port == 6060 and cfg.server.host == "127.0.0.1"


def test_env_names_follow_key_paths() -> None:
    keys = env_keys()
    for name in ("ATOM_DATA_DIR", "ATOM_SERVER_PORT", "ATOM_LIMITS_MAX_REQUEST_BYTES", "ATOM_SERVER_TLS_CERT",
                 "ATOM_CALLBACKS_SECRET", "ATOM_SHUTDOWN_GRACE_PERIOD", "ATOM_LIMITS_MAX_WAIT_MS"):
        assert name in keys
    assert keys["ATOM_LIMITS_MAX_REQUEST_BYTES"][0] == ("limits", "max_request_bytes")


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: atom-1
        server:
          prot: 9090
          host: 127.0.0.1
        limits: {max_wait_ms: soon}
        store: postgresql://db/atom
        auth: {type: jwt}
        purge_days: -1
    """)
    with pytest.raises(LoadError) as err:
        load_config(path, env={"ATOM_SERVER_PORT": "eighty"})
    lines = [str(p) for p in err.value.problems]
    assert f"{path}:4:3: error: unknown field 'prot' (did you mean 'port'?)" in lines
    assert f"{path}:6:23: error: expected an integer, got 'soon'" in lines
    assert any(f"{path}:7:8: error: store 'postgresql' is not available" in x for x in lines)
    assert any("auth type jwt needs jwt.secret or jwt.public_key" in x for x in lines)
    assert f"{path}:9:13: error: must be >= 0, got -1" in lines
    assert "ATOM_SERVER_PORT: error: expected an integer, got 'eighty'" in lines


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(LoadError) as err:
        load_config(str(tmp_path / "missing.yaml"), env={})
    assert "cannot read configuration" in str(err.value)
    with pytest.raises(LoadError) as err:
        load_config(write(tmp_path, "server: [\n"), env={})
    assert "invalid YAML" in str(err.value)
    with pytest.raises(LoadError):
        load_config(write(tmp_path, "- a list\n"), env={})


def test_find_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None) is None
    comp = tmp_path / "procs"
    comp.mkdir()
    (comp / "atom.yaml").write_text("name: x\n")
    assert find_config(None, str(comp)) == str(comp / "atom.yaml")
    (tmp_path / "atom.yaml").write_text("name: y\n")
    assert find_config(None, str(comp)) == "atom.yaml"
    assert find_config("explicit.yaml", str(comp)) == "explicit.yaml"


def test_serve_refuses_an_invalid_configuration(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: high}\nlimitz: {}\n")
    res = CliRunner().invoke(main, ["serve", str(tmp_path), "--config", path])
    assert res.exit_code == 1
    assert f"{path}:1:16: error: expected an integer, got 'high'" in res.output
    assert f"{path}:2:1: error: unknown field 'limitz' (did you mean 'limits'?)" in res.output
    assert "2 error(s) in the configuration" in res.output
