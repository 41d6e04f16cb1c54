import argparse

import pytest

import config
import configurator


def parse(*argv, keys=("n_layer", "learning_rate", "pitch_range", "keep_drums", "device")):
    return configurator.cli(argparse.ArgumentParser(), list(keys), list(argv))


def test_defaults_presets_and_overrides_in_that_order():
    assert parse().n_layer == config.n_layer
    assert parse("--preset=cpu_demo").n_layer == config.PRESETS["cpu_demo"]["n_layer"]
    assert parse("--preset=cpu_demo", "--n_layer=5").n_layer == 5
    assert parse("--n_layer", "7").n_layer == 7


def test_values_are_parsed_by_the_type_of_their_default():
    a = parse("--learning_rate=3", "--pitch_range=30,90", "--keep_drums=true", "--device=cpu")
    assert a.learning_rate == 3.0 and isinstance(a.learning_rate, float)
    assert a.pitch_range == (30, 90) and a.keep_drums is True and a.device == "cpu"


@pytest.mark.parametrize("arg", ["--n_layer=1.5", "--keep_drums=maybe", "--pitch_range=a,b", "--n_laye=3",
                                 "--preset=nope", "--max_dur=3"])
def test_bad_values_and_unknown_keys_are_errors(arg, capsys):
    with pytest.raises(SystemExit):
        parse(arg)
    assert "error" in capsys.readouterr().err
