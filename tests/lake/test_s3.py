"""The Delta lake on S3-compatible object storage (a real s3proxy server) against the shared
lake suite, and object-store settings taken from the usual ``AWS_*`` variables."""

from __future__ import annotations

import uuid

import pytest

import harness
from iotstream.config import load_settings
from iotstream.lake import LakeError, create_lake
from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch

from .suite import EVERYTHING, T0, LakeSuite, Location, point

pytestmark = pytest.mark.s3

BUCKET = "lake"


def options_of(server: harness.Service) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": harness.S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": harness.S3_SECRET_KEY,
        "AWS_REGION": harness.S3_REGION,
        "AWS_ENDPOINT_URL": harness.s3_endpoint(server),
        "AWS_ALLOW_HTTP": "true",
    }


def fresh_url(server: harness.Service) -> str:
    harness.s3_bucket(server, BUCKET)
    return f"s3://{BUCKET}/test-{uuid.uuid4().hex}"


class TestS3Lake(LakeSuite):
    @pytest.fixture
    def location(self, s3_server: harness.Service) -> Location:
        return fresh_url(s3_server), options_of(s3_server)


async def test_credentials_and_endpoint_come_from_the_environment(
    s3_server: harness.Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in options_of(s3_server).items():
        monkeypatch.setenv(name, value)
    url = fresh_url(s3_server)
    lake = create_lake(load_settings(lake_url=url))
    assert isinstance(lake, DeltaLake) and not lake.local
    async with lake:
        await lake.append(Batch(readings=[point("r1", T0, 1.0, 2.0)]), {"bus/0": 1})
        assert [r["x"] for r in await lake.readings(EVERYTHING)] == [1.0]
        assert await lake.versions("readings") == {"bus/0": 1}
    # The objects are in the server's bucket, not on a local path.
    stored = s3_server.workdir / "data" / BUCKET / url.rsplit("/", 1)[1] / "readings"
    assert (stored / "_delta_log").is_dir()


async def test_an_unreachable_store_is_a_lake_error() -> None:
    options = {
        "AWS_ACCESS_KEY_ID": "nobody",
        "AWS_SECRET_ACCESS_KEY": "nothing",
        "AWS_REGION": harness.S3_REGION,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{harness.free_port()}",
        "AWS_ALLOW_HTTP": "true",
        "max_retries": "1",
        "retry_timeout": "2s",
    }
    lake = DeltaLake("s3://lake/nowhere", options)
    with pytest.raises(LakeError, match=r"creating the tables failed: .*Connection refused"):
        await lake.start()
    health = lake.health()
    assert not health.ok and "\n" not in health.detail and "\x1b" not in health.detail
