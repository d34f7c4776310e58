"""The in-process API of tests/api, with credentials required (``secured``)."""

from __future__ import annotations

from tests.api.conftest import context, hub, store
from tests.auth.secured import api_keys, authenticator, secured, secured_client

__all__ = ["api_keys", "authenticator", "context", "hub", "secured", "secured_client", "store"]
