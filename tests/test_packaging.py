"""The gateway runs on a small device: it must not need the API's web or database stack."""

import subprocess
import sys

HEAVY = ("fastapi", "sqlmodel", "sqlalchemy", "starlette", "asyncpg", "alembic", "uvicorn")


def test_gateway_and_simulator_do_not_import_the_api_stack() -> None:
    probe = (
        "import sys, lock_gateway.cli, lock_gateway.daemon, firmware_sim.cli, firmware_sim.fleet;"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_console_scripts_answer_help() -> None:
    for module in ("api.cli", "lock_gateway.cli", "firmware_sim.cli"):
        entry = "app()" if module == "api.cli" else "main()"
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.argv=['x','--help']; from {module} import *; {entry}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout.lower()
