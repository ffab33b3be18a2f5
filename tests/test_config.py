import pytest

from ganforge.config import TrainConfig, apply_overrides, make_config
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
