"""Settings the service cannot use are refused when it starts, each named (see test_cli for the
message the commands print)."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.settings import Settings


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"host": ""}, "at least 1 character"),
        ({"port": 99_999}, "less than or equal to 65535"),
        ({"port": -1}, "greater than or equal to 0"),
        ({"db_statement_timeout": float("inf")}, "finite number"),
        ({"db_statement_timeout": 3_000_000}, "less than or equal to 86400"),
        ({"db_statement_timeout": 0.0004}, "greater than or equal to 0.001"),
        ({"db_lock_timeout": float("inf")}, "finite number"),
        ({"db_lock_timeout": 0.0004}, "greater than or equal to 0.001"),
        ({"db_lock_timeout": 5, "db_statement_timeout": 5}, "must be shorter than DB_STATEMENT"),
        ({"db_statement_timeout": 0.5}, r"DB_LOCK_TIMEOUT \(1 s\) must be shorter"),
        ({"db_connect_timeout": float("nan")}, "finite number"),
        ({"db_pool_timeout": 1e300}, "less than or equal to 86400"),
        ({"readiness_timeout": float("inf")}, "finite number"),
        ({"jwt_algorithms": ""}, "at least 1 item"),
        ({"jwt_public_key": "garbage"}, "is not a PEM public key"),
        ({"jwt_public_key_file": Path("/nonexistent/key.pem")}, "cannot be read"),
    ],
)
def test_unusable_settings_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Settings(**values)


def test_a_public_key_file_that_is_no_key_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text("not a key")
    with pytest.raises(ValidationError, match="is not a PEM public key"):
        Settings(jwt_public_key_file=key_file)
