import dataclasses
import json

import pytest
from conftest import tiny_config

from ganforge import train
from ganforge.checkpoint import load_checkpoint
from ganforge.config import TrainConfig, apply_overrides, make_config, settle
from ganforge.data import load_data
from ganforge.errors import GanforgeError


def test_overrides_are_typed():
    cfg = apply_overrides(TrainConfig(), ["batch_size=16", "lr_g=1e-3", "tensorboard=yes", "steps=none",
                                          "loss=minimax", "image-size=64"])
    assert (cfg.batch_size, cfg.lr_g, cfg.tensorboard, cfg.steps, cfg.loss, cfg.image_size) == \
        (16, 1e-3, True, None, "minimax", 64)


@pytest.mark.parametrize("pair,message", [
    ("tensorboard=maybe", "expected bool"), ("epochs=two", "expected float"), ("bogus=1", "unknown key 'bogus'"),
])
def test_bad_overrides_name_the_key(pair, message):
    with pytest.raises(GanforgeError, match=message):
        apply_overrides(TrainConfig(), [pair])


@pytest.mark.parametrize("changes,key", [
    ({"image_size": 48}, "image_size"), ({"channels": 2}, "channels"), ({"beta1": 1.0}, "beta1"),
    ({"real_label": 0.5}, "real_label"), ({"label_smoothing": 0.7}, "label_smoothing"), ({"model": "vae"}, "model"),
])
def test_out_of_range_values_name_the_key(changes, key):
    with pytest.raises(GanforgeError, match=f"^{key}="):
        TrainConfig(**changes).validate()


def test_presets_and_derived_fake_label():
    assert make_config("gpu").g_width == 128 and make_config("gpu").batch_size == 128
    assert make_config("gpu", pairs=["batch_size=8"]).batch_size == 8  # --set wins over the preset
    assert make_config().fake_label == 0.0
    assert make_config(pairs=["real_label=0"]).fake_label == 1.0
    with pytest.raises(GanforgeError, match="unknown config key"):
        TrainConfig.from_dict({"nonsense": 1})


def test_a_saved_config_keeps_what_it_trained_with_before_an_option_existed():
    """A run saved before g_depth, mode_seeking or consistency existed trained without them: resumed (from_saved),
    it keeps 0 for each; a config given afresh (from_dict) takes today's defaults; what a config states wins."""
    values = TrainConfig().to_dict()
    for key in ("g_depth", "d_depth", "mode_seeking", "consistency"):
        values.pop(key)
    old = TrainConfig.from_saved(values)
    assert (old.g_depth, old.d_depth, old.mode_seeking, old.consistency) == (0, 0, 0, 0)
    fresh = TrainConfig.from_dict(values)
    assert fresh.g_depth is None and fresh.mode_seeking == TrainConfig().mode_seeking > 0
    assert TrainConfig.from_saved(values | {"mode_seeking": 2.0}).mode_seeking == 2.0


def test_the_data_decides_its_defaults_once_and_config_json_holds_them(tmp_path):
    """A run's config.json and checkpoints hold every value, the data's defaults included, and say which the data
    decided; settling that config again (what a resume does) changes nothing."""
    run = train(tiny_config(g_depth=None, d_depth=None, steps=2), runs_dir=tmp_path, progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["chosen"]["from_data"] == ["ada", "channels", "d_depth", "g_depth", "image_size"]
    assert (saved["image_size"], saved["channels"], saved["g_depth"], saved["d_depth"], saved["ada"]) == (28, 1, 1, 1, False)
    meta, _ = load_checkpoint(run)
    assert meta["from_data"] == saved["chosen"]["from_data"] and meta["config"]["g_depth"] == 1
    cfg = TrainConfig.from_saved(meta["config"])
    again, decided = settle(cfg, load_data("digits"))
    assert decided == [] and again.to_dict() == cfg.to_dict()
    with pytest.raises(AttributeError, match="settled config does not change"):  # frozen, as the run trains it
        again.lr_g = 1e-3
    again.lr_g = cfg.lr_g  # no change is no error
    assert dataclasses.replace(again, lr_g=1e-3).lr_g == 1e-3  # a changed copy, as a resume makes
    # what the user set stays: depth 0 at 28 px, and a fixed policy keeps ADA off
    mine, decided = settle(tiny_config(g_depth=0, diffaugment="translation"), load_data("digits"))
    assert (mine.g_depth, mine.ada, mine.diffaugment) == (0, False, "translation") and "g_depth" not in decided


def test_settling_for_a_model_that_cannot_draw_the_datas_size_says_which_size_to_ask_for():
    with pytest.raises(GanforgeError, match="digits is 28 px: add --image-size 32"):
        settle(tiny_config(model="light", image_size=None), load_data("digits"))
