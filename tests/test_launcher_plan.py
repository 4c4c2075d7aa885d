"""ossc-run's pure layers: build_plan (settings precedence, the child's environment),
--print-env, config.json writing, and `ossc config`. Nothing here contacts a store."""

import json
import re

import pytest

from ossc import cli, settings
from ossc.config import ALIYUN_LOG_LEVELS, ConfigFile
from ossc.errors import UserError
from ossc.launcher import _write_config, build_plan, env_exports, owner_argv, parse_args

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
    assert plan.settings["prefetch"] == {"vcpus": "auto", "workers": 5, "policy": "eager"}
    assert plan.settings["expireTimeSec"] == 120           # default
    assert plan.config_path == str(config)


def test_config_to_write_need_not_exist_yet(tmp_path):
    plan = plan_for(["--oss-path", "s3://bkt/p/", "--model-dir", "/m", "--config",
                     str(tmp_path / "new" / "config.json"), "--", "true"])
    assert plan.config_explicit and plan.settings["chunkSize"] == "auto"


@pytest.mark.parametrize("option", settings.OPTIONS, ids=lambda o: o.key)
def test_every_option_has_its_osc_env_variable(option):
    """env_name (used by --print-env) names the variable the engine reads."""
    value = {"signature": "v1", "addressing": "path", "logLevel": "debug",
             "allowNonEmptyModelDir": "yes", "chunkSize": "1MiB", "verifyBeforeRead": "no",
             "cacheDir": "/var/cache/ossc", "smallFileSize": "1MiB", "prefetch.policy": "lazy",
             "cacheLimit": "50%", "pinGpu": "yes", "upload.partSize": "8MiB",
             "upload.checksum": "md5"}.get(option.key, "7")
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


def test_pin_gpu_reaches_the_shim_from_option_and_config_file(tmp_path):
    """The shim reads OSSC_PIN_GPU from its environment only: ossc-run exports what the option
    or the config file says, and nothing when it is off."""
    base = ["--oss-path", "oss://bkt/p/", "--model-dir", "/m"]
    assert "OSSC_PIN_GPU" not in plan_for([*base, "--", "true"]).child_env
    assert plan_for([*base, "--pin-gpu", "--", "true"]).child_env["OSSC_PIN_GPU"] == "yes"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"pinGpu": "yes"}))
    plan = plan_for([*base, "--config", str(config), "--", "true"])
    assert plan.child_env["OSSC_PIN_GPU"] == "yes"
    assert "export OSSC_PIN_GPU=yes" in env_exports(plan)


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


# Aliyun's OSS connector package installs this as /etc/oss-connector/config.json.
ALIYUN_DEFAULT = {"logLevel": 1, "logPath": "/var/log/oss-connector/connector.log",
                  "auditPath": "/var/log/oss-connector/audit.log",
                  "prefetch": {"vcpus": 16, "workers": 16}}
# The keys its torch connector reads from the same file (kept, not interpreted).
TORCH_KEYS = {"datasetConfig": {"prefetchConcurrency": 24, "prefetchWorker": 2,
                                "enableFastList": False},
              "checkpointConfig": {"prefetchConcurrency": 24, "prefetchWorker": 4,
                                   "uploadConcurrency": 64}}
RUN = ["--oss-path", "s3://bkt/p/", "--model-dir", "/m"]


def test_config_file_is_an_input_a_different_run_starts(tmp_path):
    """A missing file is created with the defaults; later runs with other options and
    variables read it below them and neither fail nor rewrite it, and nothing of an earlier
    run's options or environment stays behind."""
    path = tmp_path / "etc" / "config.json"
    first = plan_for([*RUN, "--config", str(path), "--vcpus", "4", "--", "true"],
                     {"OSSC_RETRIES": "3", "OSSC_LOG_LEVEL": "debug"})
    _write_config(first)
    written = json.loads(path.read_text())
    assert path.read_text() == json.dumps(written, indent=2, sort_keys=True) + "\n"
    assert written["retries"] == 8                          # defaults only, and derived
    assert written["prefetch"]["vcpus"] == written["chunkSize"] == "auto"  # ones stay auto
    assert written["logLevel"] == "info"
    before = path.read_bytes()

    second = plan_for([*RUN, "--config", str(path), "--vcpus", "8", "--", "true"],
                      {"OSSC_RETRIES": "5"})
    assert second.config_writes is None
    _write_config(second)
    assert path.read_bytes() == before
    assert second.settings["prefetch"]["vcpus"] == 8 and second.settings["retries"] == 5
    assert second.child_env["OSSC_PREFETCH_VCPUS"] == "8"    # options reach COMMAND as env

    third = plan_for([*RUN, "--config", str(path), "--", "true"])
    assert third.settings["prefetch"]["vcpus"] == "auto" and third.settings["retries"] == 8
    assert third.settings["logLevel"] == "info"
    path.write_text('{"chunkSize": "1MiB"}')                 # edited by hand: read as it is
    fourth = plan_for([*RUN, "--config", str(path), "--chunk-size", "2MiB", "--", "true"])
    _write_config(fourth)
    assert fourth.settings["chunkSize"] == 2 << 20
    assert path.read_text() == '{"chunkSize": "1MiB"}'
    assert plan_for([*RUN, "--config", str(path), "--", "true"]).settings["chunkSize"] == 1 << 20


def test_owner_derives_what_was_left_auto(tmp_path):
    """ossc-run passes "auto" on to the owner, so it derives threads and transfers on its
    machine and sizes chunks over all its large objects; a number given is passed as given."""
    def sets(plan):
        argv = owner_argv("ossc-owner", plan.mounts[0])
        return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")

    given = sets(plan_for([*RUN, "--workers", "4", "--", "true"]))
    assert given["prefetch.vcpus"] == given["chunkSize"] == "auto"
    assert given["prefetch.workers"] == "4" and given["config"] == ""
    path = tmp_path / "config.json"
    path.write_text('{"chunkSize": "8MiB"}')
    assert sets(plan_for([*RUN, "--config", str(path), "--", "true"]))["chunkSize"] == str(8 << 20)


def test_force_is_accepted_and_changes_nothing(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"retries": 2}')
    plan = plan_for([*RUN, "--config", str(path), "--force", "--retries", "4", "--", "true"])
    _write_config(plan)
    assert plan.settings["retries"] == 4 and path.read_text() == '{"retries": 2}'


def test_aliyun_default_config_is_accepted(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**ALIYUN_DEFAULT, **TORCH_KEYS}, indent=4))
    assert cli.main(["config", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: valid"
    plan = plan_for([*RUN, "--config", str(path), "--", "true"])
    assert plan.settings["prefetch"] == {"vcpus": 16, "workers": 16, "policy": "eager"}
    assert plan.settings["logLevel"] == "info"               # 1 is INFO in Aliyun's numbering
    assert plan.settings["logPath"] == "/var/log/oss-connector/connector.log"
    assert "datasetConfig" not in plan.settings              # not the engine's
    assert settings.as_overrides(plan.settings)["prefetch.vcpus"] == "16"


def test_log_level_numbers_are_aliyuns_in_the_engine_too():
    """config.py's copy of the numbering agrees with the engine's (settings.c)."""
    for number, name in enumerate(ALIYUN_LOG_LEVELS):
        resolved = settings.resolve(None, {}, {**BASE_ENV, "OSSC_LOG_LEVEL": str(number)})
        assert resolved["logLevel"] == name
    with pytest.raises(Exception) as info:
        settings.resolve(None, {}, {**BASE_ENV, "OSSC_LOG_LEVEL": str(len(ALIYUN_LOG_LEVELS))})
    assert "0 debug, 1 info, 2 warn, 3 error" in str(info.value)


def test_write_config_merges_and_keeps_what_it_does_not_know(tmp_path):
    path = tmp_path / "config.json"
    original = {**ALIYUN_DEFAULT, **TORCH_KEYS, "chunkSize": "8MiB"}
    path.write_text(json.dumps(original, indent=4))
    plan = plan_for([*RUN, "--config", str(path), "--write-config", "--workers", "32",
                     "--log-level", "debug", "--endpoint", "http://127.0.0.1:9000",
                     "--region", "cn-hangzhou", "--credentials-file", "/run/creds.json",
                     "--", "true"],
                    {"OSSC_RETRIES": "5", "AWS_ACCESS_KEY_ID": "AKID",
                     "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    _write_config(plan)
    text = path.read_text()
    written = json.loads(text)
    assert written == {**original, "prefetch": {"vcpus": 16, "workers": 32}, "retries": 5,
                       "logLevel": 0}                         # still Aliyun's numbers
    for per_run in ("endpoint", "region", "credentialsFile", "127.0.0.1", "cn-hangzhou",
                    "creds.json", "AKID", "s3cr3t", "bkt", '"/m"', "addressing"):
        assert per_run not in text
    assert cli.main(["config", "validate", str(path)]) == 0
    again = plan_for([*RUN, "--config", str(path), "--write-config", "--", "true"])
    _write_config(again)                                      # nothing new: untouched
    assert path.read_text() == text


def test_write_config_into_a_new_file_and_given_addressing(tmp_path):
    path = tmp_path / "new" / "config.json"
    plan = plan_for([*RUN, "--config", str(path), "--write-config", "--chunk-size", "8MiB",
                     "--addressing", "path", "--", "true"],
                    {"OSS_ENDPOINT": "http://127.0.0.1:1", "OSS_REGION": "r"})
    _write_config(plan)
    written = json.loads(path.read_text())
    assert written["chunkSize"] == 8 << 20 and written["addressing"] == "path"
    assert not {"endpoint", "region", "credentialsFile"} & set(written)
    with pytest.raises(UserError) as info:
        plan_for([*RUN, "--config", "", "--write-config", "--", "true"])
    assert info.value.exit_code == 2


@pytest.mark.parametrize("content,words", [
    ({"prefetch": {"vcpu": 2}}, "did you mean 'prefetch.vcpus'"),
    ({"prefetc": {"vcpus": 2}}, "did you mean 'prefetch'"),
    ({"datasetConfg": {"prefetchWorker": 2}}, "did you mean 'datasetConfig'"),
    ({"logLevle": 1}, "did you mean 'logLevel'"),
    ({"logLevel": 4}, "0 debug, 1 info, 2 warn, 3 error"),
    ({"checkpointConfig": 4}, "expected an object"),
])
def test_typo_in_config_file_is_refused_before_anything_runs(tmp_path, content, words):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as info:
        plan_for([*RUN, "--config", str(path), "--", "true"])
    assert info.value.exit_code == 3 and words in str(info.value)


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


def test_ossc_config_generate_merges_into_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OSSC_CONFIG", "/nonexistent")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**ALIYUN_DEFAULT, **TORCH_KEYS}))
    assert cli.main(["config", "generate", "--vcpus", "8", "--endpoint", "http://e:1",
                     "--write", str(path)]) == 0
    assert json.loads(path.read_text()) == {**ALIYUN_DEFAULT, **TORCH_KEYS,
                                            "prefetch": {"vcpus": 8, "workers": 16}}


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


@pytest.mark.parametrize("argv,env", [([], {}), (["--config", ""], {"OSSC_CONFIG": "/x.json"})],
                         ids=["OSSC_CONFIG=''", "--config ''"])
def test_empty_config_path_means_no_config_file_read_or_written(argv, env, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_for(["--oss-path", "oss://bkt/p/", "--model-dir", "/m", *argv, "--", "true"],
                    env)
    assert plan.config_path == "" and plan.child_env["OSSC_CONFIG"] == ""
    assert plan.config_writes is None
    _write_config(plan)
    assert list(tmp_path.iterdir()) == []


def test_exit_code_outside_the_library_agrees_with_the_engine():
    """entry.py keeps one copy (for when libossc.so cannot be loaded): it must agree."""
    from ossc import entry
    from ossc.errors import status_exit_code
    from ossc.native import lib

    assert entry.EXIT_LOCAL == status_exit_code(lib.OSSC_E_IO)


def _engine_table():
    """The engine's settings table as it describes itself (not through ossc.settings)."""
    from ossc.native import ffi, lib

    ptr = lib.ossc_settings_describe()
    try:
        return json.loads(ffi.string(ptr).decode())
    finally:
        lib.ossc_free(ptr)


@pytest.mark.parametrize("row", _engine_table(), ids=lambda r: r["key"])
def test_every_setting_of_the_engine_is_an_ossc_run_option_with_its_facts(row, capsys,
                                                                          monkeypatch):
    """ossc-run's options are generated from the engine's table: a new row is a new option,
    and --help shows its help, range, default and variable."""
    assert row.get("help") and row.get("group") in ("store", "tuning", "session", "logging")
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    opt = settings.setting(row["key"])
    blocks = re.split(r"\n(?=  -)", capsys.readouterr().out)  # an option and its help
    line = " ".join(next(b for b in blocks if b.split()[0] == opt.flag).split())
    assert row["help"] in line and row["env"] in line
    if row["default"] and not row["switch"]:
        assert f"default {row['default']}" in line
    if row["type"] == "int":
        assert f"{row['min']} to {row['max']}" in line
    if row["type"] == "size":
        assert (f"{settings._size_text(row['min'])} to {settings._size_text(row['max'])}"
                in line)
    for choice in row.get("choices", ()) if not row["switch"] else ():
        assert choice in line.split()[1]  # {a,b,c}


@pytest.mark.parametrize("option", settings.OPTIONS, ids=lambda o: o.key)
def test_every_option_reaches_the_engine_under_its_key(option):
    value = {"signature": "v1", "addressing": "path", "logLevel": "debug", "chunkSize": "1MiB",
             "verifyBeforeRead": "no", "smallFileSize": "1MiB", "prefetch.policy": "lazy",
             "pinGpu": "yes", "upload.partSize": "8MiB", "upload.checksum": "md5"
             }.get(option.key, "7")
    argv = [option.flag] if option.is_switch else [option.flag, value]
    plan = plan_for(["--oss-path", "oss://bkt/p/", "--model-dir", "/m", *argv, "--", "true"])
    default = settings.flatten(settings.resolve("oss://bkt/p/", {}, BASE_ENV))
    assert option.key in plan.given
    assert settings.flatten(plan.settings)[option.key] != default[option.key]


def test_default_config_path_is_the_engines(capsys, monkeypatch):
    """The path the engine reads when none is named is the one ossc-run names and writes."""
    from ossc import config
    from ossc.native import ffi, lib

    engines = ffi.string(lib.ossc_default_config_path()).decode()
    assert config.DEFAULT_PATH == engines
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert engines in capsys.readouterr().out
    plan = build_plan(parse_args(["--oss-path", "oss://bkt/p/", "--model-dir", "/m", "--",
                                  "true"]), {"PATH": "/usr/bin:/bin"}, SHIM)
    assert plan.config_path == engines


def test_config_py_names_settings_of_the_engine():
    """config.py's lists of per-run and store-derived keys name rows of the engine's table (a
    renamed setting would otherwise slip into config.json unnoticed)."""
    from ossc import config

    keys = {row["key"] for row in _engine_table()}
    assert set(config.PER_RUN) <= keys and set(config.STORE_DERIVED) <= keys
    assert config.ALIYUN_LOG_LEVELS == tuple(next(r for r in _engine_table()
                                                  if r["key"] == "logLevel")["numbered"])


def test_mounts_each_with_its_policy():
    """--mount (repeatable) adds mounts after --oss-path/--model-dir; the first is MODEL_DIR
    for COMMAND, the others reach it as OSSC_MOUNTS (what the shim reads)."""
    plan = plan_for(["--mount", "oss://bkt/base/=/models/base",
                     "--mount", "oss://bkt/loras/=/models/loras:lazy", "--", "true"])
    assert [(m.oss_path, m.model_dir, m.policy) for m in plan.mounts] == [
        ("oss://bkt/base/", "/models/base", ""), ("oss://bkt/loras/", "/models/loras", "lazy")]
    assert plan.mounts[0].settings["prefetch"]["policy"] == "eager"
    assert plan.mounts[1].settings["prefetch"]["policy"] == "lazy"
    assert (plan.child_env["MODEL_DIR"], plan.child_env["OSS_PATH"]) == \
        ("/models/base", "oss://bkt/base/")
    assert plan.child_env["OSSC_MOUNTS"] == "oss://bkt/loras/=/models/loras:lazy"
    exports = env_exports(plan)
    assert "export OSSC_MOUNTS='oss://bkt/base/=/models/base " \
           "oss://bkt/loras/=/models/loras:lazy'" in exports
    assert "MODEL_DIR" not in exports


def test_mounts_from_the_environment_and_the_one_mount_case():
    env = {"OSSC_MOUNTS": "oss://bkt/a/=/a  oss://bkt/b/=/b:eager\n"}
    plan = plan_for(["--", "true"], env)
    assert [m.spec() for m in plan.mounts] == ["oss://bkt/a/=/a", "oss://bkt/b/=/b:eager"]
    one = plan_for(["--oss-path", "oss://bkt/p/", "--model-dir", "/m", "--", "true"])
    assert [m.spec() for m in one.mounts] == ["oss://bkt/p/=/m"]
    assert "OSSC_MOUNTS" not in one.child_env and "export MODEL_DIR=/m" in env_exports(one)


@pytest.mark.parametrize("argv", [["--mount", "oss://bkt/p/"], ["--mount", "/m=oss://bkt/p/"],
                                  ["--mount", "oss://bkt/a/=/m", "--mount", "oss://bkt/b/=/m"]])
def test_bad_mounts_are_usage_errors(argv):
    with pytest.raises(UserError) as exc:
        plan_for([*argv, "--", "true"])
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("argv", [
    ["--mount", "oss://bkt/a/=/models", "--mount", "oss://bkt/b/=/models/loras"],
    ["--mount", "oss://bkt/b/=/models/loras/x:lazy", "--mount", "oss://bkt/a/=/models/"],
    ["--oss-path", "oss://bkt/a/", "--model-dir", "m", "--mount", "oss://bkt/b/=/work/m/x"],
])
def test_overlapping_mount_directories_are_refused(argv):
    """A path below both would be served by one session only: refused, one line naming both."""
    with pytest.raises(UserError) as exc:
        plan_for([*argv, "--", "true"])
    assert exc.value.exit_code == 2
    assert "overlap" in str(exc.value) and "is inside" in str(exc.value), str(exc.value)
    # Siblings that share a prefix of letters are not nested.
    plan = plan_for(["--mount", "oss://bkt/a/=/models/base", "--mount",
                     "oss://bkt/b/=/models/base2", "--", "true"])
    assert len(plan.mounts) == 2


def test_env_var_mode_refuses_overlapping_mounts(tmp_path):
    """The shim, given nested MODEL_DIR and OSSC_MOUNTS by hand: one line, exit code 3
    (configuration), before the program runs."""
    import subprocess
    import sys

    from ossc.errors import EXIT_CONFIG
    from ossc.native import preload_library

    marker = tmp_path / "ran"
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(preload_library()),
           "MODEL_DIR": str(tmp_path / "m"), "OSS_PATH": "oss://bkt/a/",
           "OSSC_MOUNTS": f"oss://bkt/b/={tmp_path / 'm' / 'loras'}:lazy"}
    r = subprocess.run([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == EXIT_CONFIG == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "overlap" in lines[0] and "loras is inside" in lines[0], r.stderr
    assert not marker.exists()


def test_prefetch_report_names_the_failed_files(monkeypatch, capsys):
    """A prefetch that completed with failed files says so (objectsFailed), not "prefetched"."""
    from ossc import launcher

    info = {"state": "complete", "objects": 6, "objectsFailed": 1, "bytesTotal": 12 << 20,
            "bytesDone": 10 << 20, "policy": "eager", "cacheLimit": 0, "currentFile": "",
            "errors": [{"file": "adapter-0/weights.bin", "error": "Permission denied"}]}
    monkeypatch.setattr(launcher, "sessions", lambda model_dir: [info])
    report = launcher.PrefetchReport("/m", {**info, "state": "fetching"})
    report.poll(now=True)
    err = capsys.readouterr().err
    assert "prefetch failed for 1 of 6 files: adapter-0/weights.bin: Permission denied" in err
    assert "prefetched" not in err
