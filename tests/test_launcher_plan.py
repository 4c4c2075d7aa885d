"""ossc-run's pure layers: build_plan (settings precedence, the child's environment),
--print-env, config.json writing, and `ossc config`. Nothing here contacts a store."""

import json

import pytest

from ossc import cli, settings
from ossc.config import ConfigFile
from ossc.errors import UserError
from ossc.launcher import build_plan, env_exports, parse_args

SHIM = "/opt/ossc/libossc_preload.so"
BASE_ENV = {"PATH": "/usr/bin:/bin", "OSSC_CONFIG": ""}


def plan_for(argv, env=None, cwd="/work"):
    return build_plan(parse_args(argv), {**BASE_ENV, **(env or {})}, SHIM, cwd)


def test_options_beat_env_and_env_fills_gaps():
    plan = plan_for(["--oss-path", "oss://bkt/cli/", "--", "true"],
                    {"OSS_PATH": "oss://bkt/env/", "MODEL_DIR": "/m", "OSS_ENDPOINT": "http://e"})
    assert plan.oss_path == "oss://bkt/cli/"
    assert plan.model_dir == "/m"
    assert plan.command == ("true",)
    assert plan.settings["endpoint"] == "http://e"


def test_settings_resolve_cli_over_env_over_file_over_default(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"chunkSize": "4MiB", "retries": 3, "logLevel": "debug",
                                  "prefetch": {"workers": 5}}))
    plan = plan_for(["--oss-path", "s3://bkt/p/", "--model-dir", "/m", "--config", str(config),
                     "--chunk-size", "16MiB", "--", "true"],
                    {"OSSC_RETRIES": "4", "OSSC_CHUNK_SIZE": "8MiB"})
    assert plan.settings["chunkSize"] == 16 << 20          # option
    assert plan.settings["retries"] == 4                   # env over file
    assert plan.settings["logLevel"] == "debug"            # file over default
    assert plan.settings["prefetch"] == {"vcpus": 2, "workers": 5}
    assert plan.settings["expireTimeSec"] == 120           # default
    assert plan.config_path == str(config)


def test_config_to_write_need_not_exist_yet(tmp_path):
    plan = plan_for(["--oss-path", "s3://bkt/p/", "--model-dir", "/m", "--config",
                     str(tmp_path / "new" / "config.json"), "--", "true"])
    assert plan.config_explicit and plan.settings["chunkSize"] == 32 << 20


@pytest.mark.parametrize("option", settings.OPTIONS, ids=lambda o: o.key)
def test_every_option_has_its_osc_env_variable(option):
    """env_name (used by --print-env) names the variable the engine reads."""
    value = {"signature": "v1", "addressing": "path", "logLevel": "debug",
             "allowNonEmptyModelDir": "yes", "chunkSize": "1MiB", "verifyBeforeRead": "no", "cacheDir": "/var/cache/ossc",
             "smallFileSize": "1MiB"}.get(option.key, "7")
    resolved = settings.flatten(settings.resolve(None, {}, {**BASE_ENV,
                                                            settings.env_name(option.key): value}))
    default = settings.flatten(settings.resolve(None, {}, BASE_ENV))
    assert resolved[option.key] != default[option.key]


def test_child_env_preload_first_once_and_no_owner_flag():
    env = {"LD_PRELOAD": f"/lib/libasan.so {SHIM}", "ENABLE_CONNECTOR": "1", "MODEL_DIR": "m",
           "OSS_PATH": "oss://bkt/p/"}
    plan = plan_for(["--", "python", "-m", "x"], env, cwd="/srv")
    assert plan.child_env["LD_PRELOAD"] == f"{SHIM} /lib/libasan.so"
    assert "ENABLE_CONNECTOR" not in plan.child_env
    assert plan.child_env["MODEL_DIR"] == plan.model_dir == "/srv/m"  # made absolute
    assert plan.child_env["PATH"] == BASE_ENV["PATH"]


@pytest.mark.parametrize("argv,env,code,words", [
    (["--model-dir", "/m", "--", "true"], {}, 2, "--oss-path"),
    (["--oss-path", "oss://bkt/p/", "--", "true"], {}, 2, "--model-dir"),
    (["--oss-path", "oss://bkt/p/", "--model-dir", "/m"], {}, 2, "no command"),
    (["--oss-path", "http://b/p/", "--model-dir", "/m", "--", "true"], {}, 3, "store URL"),
    (["--oss-path", "oss://bkt/p/", "--model-dir", "/m", "--ready-url", "localhost:8000",
      "--", "true"], {}, 2, "--ready-url"),
    (["--oss-path", "oss://bkt/p/", "--model-dir", "/m", "--vcpus", "0", "--", "true"], {}, 3,
     "prefetch.vcpus"),
    (["--oss-path", "s3://bkt/p/", "--model-dir", "/m", "--", "true"],
     {"OSSC_CHUNK_SIZE": "huge"}, 3, "OSSC_CHUNK_SIZE"),
])
def test_bad_input_is_one_user_error(argv, env, code, words):
    with pytest.raises(UserError) as info:
        plan_for(argv, env)
    assert info.value.exit_code == code and words in str(info.value)


def test_print_env_for_containers_has_no_secret():
    plan = plan_for(["--oss-path", "oss://bkt/my models/", "--model-dir", "/m",
                     "--chunk-size", "8MiB", "--print-env"],
                    {"OSS_ACCESS_KEY_SECRET": "s3cr3t"})
    text = env_exports(plan)
    assert f"export LD_PRELOAD={SHIM}" in text
    assert "export ENABLE_CONNECTOR=1" in text
    assert "export OSS_PATH='oss://bkt/my models/'" in text
    assert "export OSSC_CHUNK_SIZE=8MiB" in text
    assert "s3cr3t" not in text


def test_config_file_written_sorted_and_never_replaced_without_force(tmp_path):
    path = tmp_path / "etc" / "config.json"
    resolved = settings.resolve(None, {"chunkSize": "8MiB"}, BASE_ENV)
    first = ConfigFile(str(path), resolved)
    assert first.to_file() is True
    assert path.read_text() == json.dumps(resolved, indent=2, sort_keys=True) + "\n"
    assert first.to_file() is False                       # same settings: untouched
    other = ConfigFile(str(path), {**resolved, "prefetch": {"vcpus": 4, "workers": 8}})
    with pytest.raises(UserError) as info:
        other.to_file()
    assert info.value.exit_code == 3 and "prefetch.vcpus: '2' -> '4'" in str(info.value)
    assert json.loads(path.read_text())["prefetch"]["vcpus"] == 2
    assert other.to_file(force=True) is True
    assert json.loads(path.read_text())["prefetch"]["vcpus"] == 4
    path.write_text("not json")
    with pytest.raises(UserError):
        first.to_file()
    assert path.read_text() == "not json"


def test_hand_written_config_that_says_the_same_is_left_alone(tmp_path):
    """Fewer keys, or "8MiB" for 8388608: the same settings once resolved, so no rewrite and
    no --force needed."""
    path = tmp_path / "config.json"
    path.write_text('{"chunkSize": "8MiB", "prefetch": {"workers": 8}}')
    resolved = settings.resolve(None, {}, BASE_ENV, config=str(path))
    assert ConfigFile(str(path), resolved).to_file() is False
    assert path.read_text() == '{"chunkSize": "8MiB", "prefetch": {"workers": 8}}'


def test_ossc_config_generate_then_validate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OSSC_RETRIES", "5")
    monkeypatch.setenv("OSSC_CONFIG", "/nonexistent")  # generate reads no config file
    path = tmp_path / "config.json"
    assert cli.main(["config", "generate", "--workers", "12", "--write", str(path)]) == 0
    written = json.loads(path.read_text())
    assert written["prefetch"]["workers"] == 12 and written["retries"] == 5
    assert cli.main(["config", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: valid"
    assert cli.main(["config", "show", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["prefetch"]["workers"] == 12


@pytest.mark.parametrize("content,words", [
    ({"prefetch": {"vcpu": 2}}, "did you mean 'prefetch.vcpus'"),
    ({"logLevel": "loud"}, "must be one of"),
    ({"chunkSize": [1]}, "wrong type"),
])
def test_ossc_config_validate_rejects_with_a_hint(tmp_path, capsys, content, words):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    assert cli.main(["config", "validate", str(path)]) == 3
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_empty_ossc_config_means_no_config_file_written():
    plan = plan_for(["--oss-path", "oss://bkt/p/", "--model-dir", "/m", "--", "true"])
    assert plan.config_path == "" and plan.child_env["OSSC_CONFIG"] == ""
