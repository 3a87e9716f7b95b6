from pathlib import Path

import pytest

from mercato.node import Config, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mercato.toml"
    path.write_text(text)
    return path


def test_missing_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml", environ={}) == Config()


def test_the_default_config_file_that_init_writes_loads_to_the_defaults(tmp_path: Path) -> None:
    from mercato.node._config import DEFAULT_CONFIG_TOML

    assert load_config(write(tmp_path, DEFAULT_CONFIG_TOML), environ={}) == Config()


def test_file_values_then_environment_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nport = 7400\n[log]\nlevel = "debug"\n')
    config = load_config(path, environ={"MERCATO_API_PORT": "7500", "MERCATO_DATA_DIR": "/x"})
    assert config.api.port == 7500
    assert config.log.level == "debug"


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[api]\nprot = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "'prot'" in str(err.value) and str(path) in str(err.value)


def test_unknown_section_names_the_section_and_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[apii]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[apii\]") as err:
        load_config(path, environ={})
    assert str(path) in str(err.value)


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'port': expected int"):
        load_config(write(tmp_path, '[api]\nport = "many"\n'), environ={})


def test_unknown_environment_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MERCATO_API_PROT"):
        load_config(tmp_path / "none.toml", environ={"MERCATO_API_PROT": "1"})
    with pytest.raises(ConfigError, match="MERCATO_API_PORT"):
        load_config(tmp_path / "none.toml", environ={"MERCATO_API_PORT": "lots"})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[api\n")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        load_config(path, environ={})
    assert str(path) in str(err.value)


def test_the_control_api_never_leaves_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        load_config(write(tmp_path, '[api]\nhost = "0.0.0.0"\n'), environ={})
    config = load_config(write(tmp_path, '[api]\nhost = "::1"\n'), environ={})
    assert config.api.host == "::1"


def test_replace_validates(tmp_path: Path) -> None:
    config = Config()
    assert config.replace("log", format="json").log.format == "json"
    with pytest.raises(ConfigError, match=r"log\.format"):
        config.replace("log", format="xml")


def test_the_default_file_names_every_key_there_is() -> None:
    import dataclasses
    import tomllib

    from mercato.node._config import DEFAULT_CONFIG_TOML

    written = tomllib.loads(DEFAULT_CONFIG_TOML)
    for section in dataclasses.fields(Config):
        if section.name == "models":  # none by default: an example, commented (below)
            continue
        fields = dataclasses.fields(getattr(Config(), section.name))
        # TOML has no null: a key whose default is None (no limit) is shown commented.
        keys = {f.name for f in fields if f.default is not None}
        assert set(written.get(section.name, {})) == keys, section.name
        for f in fields:
            if f.default is None:
                assert f"\n# {f.name} = " in DEFAULT_CONFIG_TOML, f.name


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[settlement]\nledger = "mainnet"\n', r"settlement\.ledger"),
        ("[settlement]\nclose_margin_s = 90000\n", r"settlement\.channel_duration_s"),
        # A channel tasks would never use: less than two margins and 10 minutes long.
        ("[settlement]\nchannel_duration_s = 7000\n", r"settlement\.channel_duration_s"),
        ("[settlement]\nclose_margin_s = 60\n", r"settlement\.close_margin_s"),
        ('[settlement]\nrpc_url = "ftp://x"\n', r"settlement\.rpc_url"),
        ("[settlement]\ndeposit_lamports = 0\n", r"settlement\.deposit_lamports"),
        ("[tasks]\nverify_rate = 1.5\n", r"tasks\.verify_rate"),
        ("[tasks]\nquote_fanout = 0\n", r"tasks\.quote_fanout"),
        ("[relay]\nbandwidth_mbit = -1\n", r"relay\.bandwidth_mbit"),
        ("[relay]\ncircuit_s = 5\n", r"relay\.circuit_mb"),
        ("[relay]\nmax_reservations = 0\n", r"relay\.max_reservations"),
        ("[spending]\nmax_per_day = -1\n", r"spending\.max_per_day"),
        ("[spending]\nmax_per_task = 1.5\n", r"max_per_task"),
        ('[spending]\napprove_above = "lots"\n', r"approve_above"),
    ],
)
def test_task_and_settlement_values_out_of_range_are_refused(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text), environ={})


def test_spending_limits_are_none_unless_set_and_the_environment_can_unset_them(
    tmp_path: Path,
) -> None:
    assert Config().spending.max_per_day is None
    path = write(tmp_path, "[spending]\nmax_per_day = 5000\napprove_above = 0\n")
    config = load_config(path, environ={"MERCATO_SPENDING_MAX_PER_TASK": "700"})
    assert (config.spending.max_per_task, config.spending.max_per_day) == (700, 5000)
    assert config.spending.approve_above == 0
    unset = load_config(path, environ={"MERCATO_SPENDING_MAX_PER_DAY": "none"})
    assert unset.spending.max_per_day is None


PUBLISHER = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB"
TINY = f"""
[models.tiny]
listing = "{PUBLISHER}/tiny-chat"
backend = "http://127.0.0.1:8080/v1"
"""


def test_served_models_load_with_their_defaults(tmp_path: Path) -> None:
    from mercato.node._config import ServedModel

    big = f"""
[models.big]
listing = "{PUBLISHER}/big-chat"
backend = "https://engine.example:8443/v1"
engine_model = "meta-llama/Llama-3-8B-Instruct"
concurrency = 16
input_price = 0
output_price = 300
api_key_env = "ENGINE_KEY"
health_interval_s = 1
"""
    config = load_config(write(tmp_path, TINY + big), environ={})
    assert config.models == (
        ServedModel(
            name="tiny",
            listing=f"{PUBLISHER}/tiny-chat",
            backend="http://127.0.0.1:8080/v1",
            engine_model="tiny-chat",  # the listing's name
            concurrency=4,
            input_price=None,  # the listing's
            output_price=None,
            api_key_env="",
            health_interval_s=5.0,
        ),
        ServedModel(
            name="big",
            listing=f"{PUBLISHER}/big-chat",
            backend="https://engine.example:8443/v1",
            engine_model="meta-llama/Llama-3-8B-Instruct",
            concurrency=16,
            input_price=0,
            output_price=300,
            api_key_env="ENGINE_KEY",
            health_interval_s=1.0,
        ),
    )
    assert Config().models == ()
    assert config.to_dict()["models"]["tiny"]["backend"] == "http://127.0.0.1:8080/v1"


def test_the_default_files_commented_model_example_names_every_key() -> None:
    import dataclasses
    import tomllib

    from mercato.node._config import DEFAULT_CONFIG_TOML, ServedModel

    start = DEFAULT_CONFIG_TOML.index("# [models.tiny]")
    lines = DEFAULT_CONFIG_TOML[start:].split("\n\n", 1)[0].splitlines()
    example = "\n".join(line.removeprefix("# ") for line in lines if " = " in line or "[" in line)
    table = tomllib.loads(example.replace("PUBLISHER", PUBLISHER))["models"]["tiny"]
    assert set(table) == {f.name for f in dataclasses.fields(ServedModel)} - {"name"}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[models]\ntiny = 5\n", "models.tiny must be a table"),
        ('[models.Tiny]\nlisting = "x"\n', "[models.Tiny]: a served model's name"),
        (TINY + "colour = 1\n", "[models.tiny]: unknown key 'colour'"),
        (TINY + 'concurrency = "many"\n', "[models.tiny]: key 'concurrency': expected int"),
        ('[models.tiny]\nbackend = "http://127.0.0.1:8080/v1"\n', "key 'listing' is required"),
        (f'[models.tiny]\nlisting = "{PUBLISHER}/tiny"\n', "key 'backend' is required"),
        (TINY.replace(f"{PUBLISHER}/", ""), "models.tiny.listing must be PUBLISHER/NAME"),
        (TINY.replace(PUBLISHER, "not-base58!"), "models.tiny.listing must be PUBLISHER/NAME"),
        (TINY.replace("tiny-chat", "Tiny Chat"), "models.tiny.listing must be PUBLISHER/NAME"),
        (TINY.replace("http://", "ftp://"), "models.tiny.backend must be the engine's http"),
        (TINY.replace("http://127.0.0.1:8080/v1", "localhost"), "models.tiny.backend"),
        (TINY.replace("http://", "http://me:key@"), "models.tiny.backend must hold no credentials"),
        (TINY + 'engine_model = "two words"\n', "models.tiny.engine_model must be"),
        (TINY + "concurrency = 0\n", "models.tiny.concurrency must be between 1 and 1024"),
        (TINY + "concurrency = 1025\n", "models.tiny.concurrency must be between 1 and 1024"),
        (TINY + "input_price = -1\n", "models.tiny.input_price must be lamports per 1,000"),
        (TINY + "output_price = 10000000000000001\n", "models.tiny.output_price must be"),
        (TINY + 'api_key_env = "sk-abc123"\n', "models.tiny.api_key_env must be the name of"),
        (TINY + "health_interval_s = 0.1\n", "models.tiny.health_interval_s must be between"),
        (TINY + "health_interval_s = 301\n", "models.tiny.health_interval_s must be between"),
        (
            TINY + TINY.replace("models.tiny", "models.again"),
            "models.again.listing is served by [models.tiny] already",
        ),
    ],
)
def test_each_wrong_served_model_names_its_key_and_the_file(
    tmp_path: Path, text: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert words in str(err.value) and str(path) in str(err.value)


def test_served_models_come_from_the_file_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"MERCATO_MODELS_TINY_BACKEND.*mercato\.toml only"):
        load_config(tmp_path / "none.toml", environ={"MERCATO_MODELS_TINY_BACKEND": "http://x"})
    with pytest.raises(ConfigError, match=r"\[models\] is set in mercato.toml only"):
        Config().replace("models", name="x")
    with pytest.raises(ConfigError, match=r"known sections: .*models"):
        load_config(write(tmp_path, "[model]\nx = 1\n"), environ={})
