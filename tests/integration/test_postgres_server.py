"""The throwaway PostgreSQL server: SQL and Optuna's RDB storage work on it, and it stops."""

from pathlib import Path

import optuna
import psycopg2
import pytest
import sqlalchemy

from postgres_server import (
    postgres_url,  # noqa: F401 (a fixture)
    require_postgres_bin,
    running_postgres,
    server_workdir,
)


def _socket_file(url: str) -> Path:
    """The Unix socket file the server of ``url`` listens on."""
    query = sqlalchemy.make_url(url).query
    return Path(query["host"]) / f".s.PGSQL.{query['port']}"


def _connect(url: str) -> "psycopg2.extensions.connection":
    """A plain psycopg2 connection to the database of ``url``."""
    parsed = sqlalchemy.make_url(url)
    return psycopg2.connect(
        dbname=parsed.database, user=parsed.username, host=parsed.query["host"],
        port=parsed.query["port"], connect_timeout=5,
    )


def test_rows_written_through_sqlalchemy_read_back(postgres_url):  # noqa: F811
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("CREATE TABLE runs (id int, name text)"))
            connection.execute(
                sqlalchemy.text("INSERT INTO runs VALUES (:id, :name)"),
                [{"id": 1, "name": "cub"}, {"id": 2, "name": "sop"}],
            )
        with engine.connect() as connection:
            rows = connection.execute(sqlalchemy.text("SELECT id, name FROM runs ORDER BY id"))
            assert rows.all() == [(1, "cub"), (2, "sop")]
    finally:
        engine.dispose()


def test_an_optuna_study_is_stored_and_loaded_again(postgres_url):  # noqa: F811
    study = optuna.create_study(storage=postgres_url, study_name="x")
    study.optimize(lambda trial: trial.suggest_float("v", 0.0, 1.0), n_trials=3)
    loaded = optuna.load_study(study_name="x", storage=postgres_url)
    states = [trial.state for trial in loaded.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3


def test_the_server_stops_even_when_the_body_raises():
    bin_dir = require_postgres_bin()
    with server_workdir() as workdir:
        with pytest.raises(ZeroDivisionError), running_postgres(workdir, bin_dir) as url:
            _connect(url).close()
            assert _socket_file(url).exists()
            raise ZeroDivisionError
        assert not _socket_file(url).exists()
        assert not (workdir / "postgres" / "data" / "postmaster.pid").exists()
        with pytest.raises(psycopg2.OperationalError):
            _connect(url)
