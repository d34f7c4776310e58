"""The DuckDB engine over a lake on S3-compatible object storage (a real s3proxy server):
the shared suite, and ``analyze`` writing the derived tables there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from deltalake import DeltaTable

import harness
from iotstream.analytics import DERIVED_TABLES, DuckDBEngine, MotionParams, Window

from .scenarios import T0, write_lake
from .suite import AnalyticsSuite

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3_lake(s3_server: harness.Service) -> tuple[str, dict[str, str]]:
    options = {
        "AWS_ACCESS_KEY_ID": harness.S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": harness.S3_SECRET_KEY,
        "AWS_REGION": harness.S3_REGION,
        "AWS_ENDPOINT_URL": harness.s3_endpoint(s3_server),
        "AWS_ALLOW_HTTP": "true",
    }
    harness.s3_bucket(s3_server, "analytics")
    url = write_lake(f"s3://analytics/test-{uuid.uuid4().hex}", storage_options=options)
    return url, options


@pytest.fixture(scope="module")
def engine(s3_lake: tuple[str, dict[str, str]]) -> Iterator[DuckDBEngine]:
    with DuckDBEngine(*s3_lake) as engine:
        assert not engine.local
        yield engine


class TestDuckDBEngineOnS3(AnalyticsSuite):
    pass


def test_analyze_writes_the_tables_to_object_storage(
    engine: DuckDBEngine, s3_lake: tuple[str, dict[str, str]]
) -> None:
    url, options = s3_lake
    written = engine.analyze(Window(T0, T0), MotionParams())
    assert written["trips"] > 0
    for name in DERIVED_TABLES:
        table = DeltaTable(f"{url}/{name}", storage_options=options)
        assert table.to_pyarrow_table().num_rows == written[name]
