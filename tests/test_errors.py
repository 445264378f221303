"""What an error message may repeat of a user's input: URLs without their secrets."""

from __future__ import annotations

import pytest

from ssvae_core.errors import url_shown, without_password


@pytest.mark.parametrize(
    ("url", "whole", "host_only"),
    [
        ("postgresql://bob:s3cret@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow",
         "postgresql://bob:***@db:5432/..."),
        ("https://hooks.example.com/services/T0/B0/XYZ",
         "https://hooks.example.com/services/T0/B0/XYZ", "https://hooks.example.com/..."),
        ("http://h:5000", "http://h:5000", "http://h:5000"),
        ("http://bob@h/x?token=t", "http://bob@h/x?token=t", "http://bob@h/..."),
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
    message = f"cannot connect to {url} (db: pw reset?)"
    assert without_password(message, url) == (
        "cannot connect to postgresql://bob:***@db/mlflow (db: pw reset?)"
    )
    assert without_password("x", "http://h:5000") == "x"
