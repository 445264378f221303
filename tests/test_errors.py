"""What an error message may repeat of a user's input: URLs without their secrets."""

from __future__ import annotations

import pytest

from ssvae_core.errors import first_line, url_shown, without_password


@pytest.mark.parametrize(
    ("url", "whole", "host_only"),
    [
        ("postgresql://bob:s3cret@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow",
         "postgresql://db:5432/..."),
        # SQLAlchemy reads a password up to the first @: "/", "#" and "?" are in it
        ("postgresql://bob:pa/s#s?@db/mlflow", "postgresql://bob:***@db/mlflow",
         "postgresql://db/..."),
        ("postgresql://u@db/mlflow?sslmode=require&password=s3cret",
         "postgresql://u@db/mlflow?sslmode=require&password=***", "postgresql://db/..."),
        ("https://hooks.example.com/services/T0/B0/XYZ",
         "https://hooks.example.com/services/T0/B0/XYZ", "https://hooks.example.com/..."),
        ("http://h:5000", "http://h:5000", "http://h:5000"),
        ("http://h:5000/a@b", "http://h:5000/a@b", "http://h:5000/..."),  # no user info
        ("http://bob@h/x?token=t", "http://bob@h/x?token=***", "http://h/..."),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db", "sqlite:///..."),  # not sqlite://tmp
        ("./mlruns", "./mlruns", "./mlruns"),
    ],
)  # fmt: skip
def test_a_url_is_shown_without_its_password_or_on_request_its_path(
    url: str, whole: str, host_only: str
) -> None:
    assert url_shown(url) == whole
    assert url_shown(url, path=False) == host_only


def test_a_long_url_is_cut() -> None:
    shown = url_shown("http://h/" + "a" * 1000)
    assert len(shown) == 200 and shown.endswith("...")


def test_a_message_repeating_the_url_loses_the_password_only() -> None:
    url = "postgresql://bob:pw@db/mlflow"
    message = f"cannot connect to {url} (db: pw reset?)"  # the bare word "pw" stays
    assert without_password(message, url) == (
        "cannot connect to postgresql://bob:***@db/mlflow (db: pw reset?)"
    )
    assert without_password("x", "http://h:5000") == "x"
    api = "http://alice:s3cret@127.0.0.1:1"  # how MLflow's client says it failed
    said = f"API request to {api}/api/2.0/mlflow/runs/create failed"
    assert without_password(said, api) == (
        "API request to http://alice:***@127.0.0.1:1/api/2.0/mlflow/runs/create failed"
    )


def test_a_key_or_place_is_named_on_one_line_and_cut() -> None:
    """A 1000-character grid key was echoed whole twice (in the key and in ``(in grid cell
    ...)``), and a newline in a key split the message."""
    from ssvae_core.errors import ConfigError, key_shown, within

    assert key_shown("train.lr") == "train.lr"
    assert key_shown("tra\nin.lr") == "'tra\\nin.lr'"
    assert len(key_shown("k" * 1000)) == 100

    def refuse() -> None:
        raise ConfigError("x: no")

    with pytest.raises(ConfigError) as err:
        within("grid cell " + "k" * 1000 + "=1", refuse)
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_repeated_names_each_value_given_twice_once_in_first_order() -> None:
    from ssvae_core.errors import repeated

    assert repeated([3, 1, 3, 2, 1, 3]) == ["3", "1"] and repeated(["a", "b"]) == []


def test_first_line_keeps_an_errors_first_line_or_names_its_type() -> None:
    """SQLAlchemy's errors add their SQL and a link on lines of their own."""
    err = RuntimeError("(sqlite3.OperationalError) database is locked\n[SQL: SELECT 1]\n(link)")
    assert first_line(err) == "(sqlite3.OperationalError) database is locked"
    assert first_line(TimeoutError()) == "TimeoutError"
