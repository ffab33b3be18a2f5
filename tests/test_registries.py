"""The registries are the single source of truth: the command line, the config, checkpoint loading and the
studio follow what is registered, and a plug-in's declared options are --set keys with their checks."""

import json

import pytest
import torch

from ganforge.cli import _set_keys_help, build_parser, main
from ganforge.config import PLUGIN_OPTIONS, TrainConfig, key_help, make_config
from ganforge.errors import GanforgeError
from ganforge.families import MODELS
from ganforge.losses import LOSSES
from ganforge.metrics.features import EXTRACTORS, get_extractor
from ganforge.models.text import TEXT_ENCODERS
from ganforge.registry import Option, Registry, declared_options
from ganforge.stats import Collector, StatsTail, collecting, read_stats, report


def _choices(command: str, flag: str) -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if flag in a.option_strings).choices


def test_the_command_line_offers_what_is_registered(capsys):
    assert _choices("train", "--model") == MODELS.names() == ["mlp", "dcgan", "cgan", "light", "stackgan1", "stackgan2"]
    assert _choices("train", "--loss") == LOSSES.names() and LOSSES.names()[0] == "non-saturating"
    assert _choices("train", "--text-encoder") == TEXT_ENCODERS.names() == ["builtin", "minilm"]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for name in [*MODELS, *LOSSES, *TEXT_ENCODERS]:
        assert name in help_text
    for option in PLUGIN_OPTIONS.values():  # every declared option, with what it means
        assert option.name in help_text and option.help.split()[1] in help_text
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    eval_help = capsys.readouterr().out
    assert all(name in eval_help for name in EXTRACTORS)


def test_declared_options_are_config_keys_with_their_checks():
    cfg = TrainConfig()
    for option in PLUGIN_OPTIONS.values():
        assert hasattr(cfg, option.name)
    assert make_config(pairs=["mlp_g_hidden=64", "model=mlp"]).mlp_g_hidden == 64  # --set follows the declaration
    with pytest.raises(GanforgeError, match="^mlp_d_pieces=0: must be at least 1"):
        make_config(pairs=["mlp_d_pieces=0"])
    with pytest.raises(GanforgeError, match="^clip=-1.0: must be positive"):
        make_config(pairs=["clip=-1"])
    with pytest.raises(GanforgeError, match="^text_encoder='gpt': choose one of builtin, minilm"):
        make_config(pairs=["text_encoder=gpt"])
    with pytest.raises(GanforgeError, match="^eval_extractor='vgg': unknown feature extractor; choose one of pixels"):
        make_config(pairs=["eval_extractor=vgg"])
    # the owners' defaults: a loss's n_critic and d_norm, a model's widths
    assert make_config(overrides={"loss": "wgan"}).n_critic == LOSSES["wgan"].n_critic == 5
    assert make_config(overrides={"model": "stackgan2"}).g_width == 32


def test_options_are_gathered_from_a_class_and_its_bases():
    names = [o.name for o in declared_options(LOSSES["wgan-gp"])]
    assert names[:1] == ["r1_gamma"] and "clip" in names and names[-1] == "gp_weight"
    assert [o.name for o in declared_options(MODELS["stackgan2"])][-3:] == ["stage1", "res_blocks", "consistency"]


def test_an_unknown_name_lists_what_is_registered():
    registry = Registry("widget")

    @registry.register("gear", "turns")
    class Gear:
        options = (Option("teeth", int, 12, "gear: its teeth"),)

    assert registry["gear"] is Gear and Gear.name == "gear" and registry.help() == "gear: turns"
    assert [o.name for o in registry.options()] == ["teeth"]
    with pytest.raises(GanforgeError, match="unknown widget 'cog'; choose one of gear"):
        registry["cog"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("gear", "again")(type("Other", (), {}))
    with pytest.raises(GanforgeError, match="unknown feature extractor 'classifier'"):
        get_extractor("classifier")  # classifier needs its data: classifier:<data>


def test_statistics_are_reported_by_name_and_averaged_per_name():
    collector = Collector()
    report("ignored", 1.0)  # no collector active: nothing happens
    with collecting(collector):
        for value in (1.0, 3.0):
            report("d_loss", torch.tensor(value))
        report("g_loss", 4.0)  # reported once: its mean is over its own count
    assert collector.read() == {"d_loss": 2.0, "g_loss": 4.0}
    assert collector.read() == {}  # read, then cleared


def test_stats_tail_parses_only_what_was_appended_and_starts_again_on_a_rewrite(tmp_path, monkeypatch):
    from ganforge import stats as stats_module

    path = tmp_path / "stats.jsonl"
    tail = StatsTail(tmp_path)
    assert tail.read().lines == []  # no file yet
    line = {"step": 5, "d_loss": 1.0}
    path.write_text(json.dumps(line) + "\n" + '{"step": 10, "d_lo')  # the last line is still being written
    assert [s["step"] for s in tail.read().lines] == [5]
    parsed = []
    real_parse = stats_module._parse
    monkeypatch.setattr(stats_module, "_parse", lambda texts: parsed.extend(texts) or real_parse(texts))
    with open(path, "a") as f:
        f.write('ss": 2.0}\n' + json.dumps(line | {"step": 15}) + "\n")
    assert [s["step"] for s in tail.read().lines] == [5, 10, 15]
    assert len(parsed) == 2  # the two new lines only, not the whole file again
    assert [s["step"] for s in tail.read().lines] == [5, 10, 15] and len(parsed) == 2
    # a resume rewrites the file in place with the lines up to its checkpoint, then training appends
    path.write_text("".join(json.dumps(line | {"step": s, "d_loss": 0.123456789}) + "\n" for s in (5, 10, 15, 20)))
    assert [s["d_loss"] for s in tail.read().lines] == [0.123456789] * 4
    path.write_text(json.dumps(line) + "\n")  # shorter than before
    assert [s["step"] for s in tail.read().lines] == [5]
    replaced = tmp_path / "new.jsonl"
    replaced.write_text(json.dumps(line | {"step": 7}) + "\n")
    replaced.replace(path)  # another file under the name (an atomic rewrite)
    assert [s["step"] for s in tail.read().lines] == [7] == [s["step"] for s in read_stats(path).lines]
    path.unlink()
    assert tail.read().lines == []


def test_help_states_what_each_plugin_decides_for_an_unset_key(monkeypatch):
    """The defaults the models and losses decide live in them alone: the help of lr_g, g_width, g_depth and
    n_critic is written from them, and follows when one changes."""
    def said(key: str) -> dict[str, str]:  # "a, b: v; c: w" -> {a: v, b: v, c: w}
        text = key_help(key).rpartition("(")[2].rstrip(")").split("; 0 is")[0]
        return {name: value for part in text.split("; ") for names, _, value in [part.partition(": ")]
                for name in names.split(", ")}

    conv = [name for name in MODELS if hasattr(MODELS[name], "default_width")]
    assert said("g_width") == {name: str(MODELS[name].default_width) for name in conv}
    assert said("lr_g") == {name: f"{MODELS[name].lr:g}" for name in MODELS}
    assert said("n_critic") == {name: str(LOSSES[name].n_critic) for name in LOSSES}
    assert said("g_depth") == {"dcgan": "1 at 28 px, else 0", "cgan": "0"}
    assert "{decided}" not in _set_keys_help()
    monkeypatch.setattr(MODELS["cgan"], "default_width", 48)
    monkeypatch.setattr(MODELS["dcgan"], "default_depths", {64: (2, 2)})
    assert said("g_width")["cgan"] == "48" and said("g_depth")["dcgan"] == "2 at 64 px, else 0"
    cfg = TrainConfig(model="cgan", data="faces").validate()
    assert (cfg.g_width, cfg.d_width) == (48, 48)


def test_validation_fills_a_copy_and_leaves_the_config_as_it_was():
    cfg = TrainConfig(model="cgan", loss="wgan", spectral_norm=True)
    checked = cfg.validate()
    assert (cfg.lr_g, cfg.g_width, cfg.n_critic, cfg.d_norm) == (None,) * 4
    assert (checked.lr_g, checked.g_width, checked.n_critic, checked.d_norm) == (2e-4, 64, 5, "none")
    assert checked.validate() is checked  # nothing left to fill