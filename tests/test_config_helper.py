"""ossc.config.generate / validate / write: the Python config helper that `ossc config` and
ossc-run use themselves. Nothing here contacts a store."""

import json
import os
import stat

import pytest

import ossc
from ossc import cli
from ossc.config import InvalidConfig
from test_launcher_plan import ALIYUN_DEFAULT, TORCH_KEYS


@pytest.fixture(autouse=True)
def no_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OSSC_"):
            monkeypatch.delenv(name)


def test_generate_takes_nested_dotted_and_keyword_spellings():
    a = ossc.config.generate(chunkSize="16MiB", prefetch={"vcpus": 8})
    b = ossc.config.generate({"chunkSize": "16MiB", "prefetch.vcpus": "8"})
    c = ossc.config.generate(chunk_size="16MiB", vcpus=8)
    assert a == b == c
    assert a["chunkSize"] == 16 << 20 and a["prefetch"]["vcpus"] == 8
    # per-run values never go into a file
    assert "endpoint" not in ossc.config.generate(endpoint="http://e:1", region="cn-x")


def test_generate_is_what_ossc_config_generate_prints(capsys, monkeypatch):
    monkeypatch.setenv("OSSC_RETRIES", "5")
    assert cli.main(["config", "generate", "--workers", "12"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ossc.config.generate(workers=12, env=os.environ)
    assert printed["retries"] == 5 and printed["prefetch"]["workers"] == 12


def test_generate_aliyun_has_only_aliyuns_keys_and_numbers():
    out = ossc.config.generate(aliyun=True, vcpus=8, logLevel="warn", chunkSize="4MiB")
    assert out == {"logLevel": 2, "logPath": "", "auditPath": "", "expireTimeSec": 120,
                   "prefetch": {"vcpus": 8}}    # workers left auto: Aliyun's has no "auto"
    ossc.config.validate(out)
    assert ossc.config.generate(aliyun=True, workers=3)["prefetch"] == {"workers": 3}


def test_generate_never_writes_this_machines_numbers(tmp_path, capsys):
    """Threads, transfers and chunk size left alone stay "auto" in a generated file, so one
    made on a build machine does not pin its core count on the machines that read it."""
    derived = {"prefetch": {"vcpus": "auto", "workers": "auto"}, "chunkSize": "auto"}
    out = ossc.config.generate({})
    assert {"prefetch": {k: out["prefetch"][k] for k in ("vcpus", "workers")},
            "chunkSize": out["chunkSize"]} == derived
    path = tmp_path / "config.json"
    assert cli.main(["config", "generate", "--write", str(path)]) == 0
    written = json.loads(path.read_text())
    assert written["chunkSize"] == "auto" and written["prefetch"]["vcpus"] == "auto"
    assert ossc.config.validate(str(path))["prefetch"]["workers"] == "auto"
    assert ossc.config.generate(vcpus=8)["prefetch"]["vcpus"] == 8   # a number given stays


@pytest.mark.parametrize("content,words", [
    ({"prefetch": {"vcpu": 2}}, "did you mean 'prefetch.vcpus'"),
    ({"logLevel": "loud"}, "must be one of"),
    ({"chunkSize": [1]}, "wrong type"),
])
def test_validate_raises_the_commands_message(tmp_path, capsys, content, words):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    assert cli.main(["config", "validate", str(path)]) == 3
    command = capsys.readouterr().err.strip()
    with pytest.raises(InvalidConfig) as e:
        ossc.config.validate(str(path))
    assert words in str(e.value) and str(e.value) in command
    assert e.value.exit_code == 3 and isinstance(e.value, ValueError)
    with pytest.raises(InvalidConfig) as d:  # a dict: the same words, no temporary path
        ossc.config.validate(content)
    assert words in str(d.value) and "/tmp" not in str(d.value)


def test_validate_a_missing_file_and_a_bad_value(tmp_path):
    with pytest.raises(InvalidConfig, match="no config file at"):
        ossc.config.validate(tmp_path / "none.json")
    with pytest.raises(InvalidConfig, match="chunkSize"):
        ossc.config.generate(chunkSize="1x")
    assert ossc.config.validate(ALIYUN_DEFAULT)["prefetch"]["vcpus"] == 16


def test_write_merges_keeping_aliyuns_keys(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**ALIYUN_DEFAULT, **TORCH_KEYS}))
    assert ossc.config.write(path, {"prefetch": {"vcpus": 8}})
    assert json.loads(path.read_text()) == {**ALIYUN_DEFAULT, **TORCH_KEYS,
                                            "prefetch": {"vcpus": 8, "workers": 16}}
    assert not ossc.config.write(path, {"prefetch.vcpus": 8})  # nothing to change
    assert not ossc.config.write(path, {"retries": 3}, create_only=True)


def test_write_without_merge_replaces_and_refuses_bad_settings(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**ALIYUN_DEFAULT, **TORCH_KEYS}))
    aliyun = ossc.config.generate(aliyun=True, vcpus=4)
    assert ossc.config.write(path, aliyun, merge=False)
    assert json.loads(path.read_text()) == aliyun
    before = path.read_text()
    with pytest.raises(InvalidConfig, match="did you mean"):
        ossc.config.write(path, {"prefetch": {"vcpu": 2}})
    assert path.read_text() == before
    new = tmp_path / "new" / "config.json"
    assert ossc.config.write(new, ossc.config.generate())
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    ossc.config.validate(new)
