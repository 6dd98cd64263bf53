"""`trimtab sandbox` in the foreground: a real process that serves until it is interrupted."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from trimtab.adapters.sandbox import sandbox_command
from trimtab.domain.errors import ConfigurationError

SCRIPT = (
    "import sys\n"
    "from trimtab.adapters.sandbox import sandbox_command\n"
    "sandbox_command(port=0, speed=5.0, faults=['stale-quotes:30'],"
    " on_started=lambda url: print(url, flush=True))\n"
    "print('clean exit', flush=True)\n"
)


def read_line(stream: object, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not selector.select(timeout):
            raise AssertionError("the sandbox printed nothing in time")
    return stream.readline().strip()  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_sandbox_serves_the_env_key_pair_until_interrupted(stop_signal: signal.Signals) -> None:
    env = {**os.environ, "APCA_API_KEY_ID": "PKSERVE", "APCA_API_SECRET_KEY": "serve-secret"}
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as process:
        try:
            url = read_line(process.stdout, 20)
            assert url.startswith("http://127.0.0.1:")
            with requests.Session() as session:
                good = session.get(
                    f"{url}/v2/account",
                    headers={"APCA-API-KEY-ID": "PKSERVE", "APCA-API-SECRET-KEY": "serve-secret"},
                )
                assert good.status_code == 200
                assert good.json()["status"] == "ACTIVE"
                bad = session.get(f"{url}/v2/account", headers={"APCA-API-KEY-ID": "PKSERVE"})
                assert bad.status_code == 401
                faults = session.get(
                    f"{url}/_sandbox/faults",
                    headers={"APCA-API-KEY-ID": "PKSERVE", "APCA-API-SECRET-KEY": "serve-secret"},
                )
                assert faults.json()["stale_quotes_seconds"] == 30
            process.send_signal(stop_signal)
            assert process.wait(timeout=15) == 0
            assert read_line(process.stdout, 5) == "clean exit"
            assert process.stderr is not None
            assert "serve-secret" not in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_bad_options_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="APCA_API_KEY_ID"):
        sandbox_command(port=0, environ={})
    with pytest.raises(ConfigurationError, match="--fault"):
        sandbox_command(port=0, environ={"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}, faults=["boom"])
    broken = tmp_path / "accounts.json"
    broken.write_text('{"accounts": [{"key_id": "k"}]}', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="secret_key"):
        sandbox_command(port=0, accounts_file=broken)
    with pytest.raises(ConfigurationError, match="--speed"):
        sandbox_command(port=0, speed=0)
