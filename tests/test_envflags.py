"""DARTOOL_* switches parse one way everywhere (dartool.envflags.env_flag)."""
import pytest

from dartool.envflags import env_flag


@pytest.mark.parametrize("raw, default, want", [
    ("0", True, False), ("off", True, False), ("False", True, False), (" no ", True, False),
    ("1", False, True), ("on", False, True), ("TRUE", False, True), ("yes", False, True),
    ("", True, True), ("", False, False), ("maybe", True, True), (None, False, False),
])
def test_env_flag(monkeypatch, raw, default, want):
    if raw is None:
        monkeypatch.delenv("DARTOOL_TEST_FLAG", raising=False)
    else:
        monkeypatch.setenv("DARTOOL_TEST_FLAG", raw)
    assert env_flag("DARTOOL_TEST_FLAG", default) is want
