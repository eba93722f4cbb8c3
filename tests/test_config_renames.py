"""Renamed config keys (mtdiff.config.RENAMED_KEYS): a saved config (run folder, checkpoint)
with the old name still loads, read under the new name with a warning; a config written now
(YAML file, --set, workflow overrides) with the old name is refused, naming the new one."""

from __future__ import annotations

import warnings

import pytest
import yaml

from mtdiff.checkpoints import read_run_config
from mtdiff.config import RENAMED_KEYS, RenamedKeyWarning, RunConfig, config_from_dict, load_config
from mtdiff.errors import ConfigError
from mtdiff.train import check_run_dir


def _saved_before_the_rename(default_num_images: int = 500) -> dict:
    """A resolved config as run folders wrote it before sample.num_samples was renamed."""
    values = load_config(None, {"sample": {"default_num_images": default_num_images}}).to_dict()
    values["sample"]["num_samples"] = values["sample"].pop("default_num_images")
    return values


def test_renamed_keys_name_existing_fields():
    fields = RunConfig().to_dict()
    for old, new in RENAMED_KEYS.items():
        section, key = new.split(".")
        assert key in fields[section], new
        assert old.split(".")[1] not in fields[old.split(".")[0]], old


def test_saved_config_with_the_old_key_is_read_under_the_new_one(tmp_path):
    with pytest.warns(RenamedKeyWarning, match="sample.num_samples was renamed sample.default_num_images"):
        cfg = config_from_dict(_saved_before_the_rename(500))  # a checkpoint's config (load_run)
    assert cfg.sample.default_num_images == 500
    # a run folder's config.yaml: merged onto today's defaults first, the saved value still wins
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_saved_before_the_rename(7), sort_keys=False))
    with pytest.warns(RenamedKeyWarning):
        values = read_run_config(tmp_path / "config.yaml")
    assert values["sample"]["default_num_images"] == 7 and "num_samples" not in values["sample"]


def test_an_old_run_folder_is_still_the_same_run(tmp_path):
    """Resuming in a folder written before the rename: the migrated config equals today's."""
    saved = _saved_before_the_rename(64)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with pytest.warns(RenamedKeyWarning):
        check_run_dir(tmp_path, load_config(None, {}), log=lambda *_: None)  # no "differs at ..." error


def test_today_s_saved_config_loads_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenamedKeyWarning)
        assert config_from_dict(RunConfig().to_dict()) == RunConfig()


@pytest.mark.parametrize("source", ["yaml", "set", "overrides"])
def test_a_new_config_with_the_old_key_is_refused_naming_the_new_one(tmp_path, source):
    if source == "yaml":
        path = tmp_path / "run.yaml"
        path.write_text("sample:\n  num_samples: 10\n")
        load = lambda: load_config(path)  # noqa: E731
    elif source == "set":
        load = lambda: load_config(None, ["sample.num_samples=10"])  # noqa: E731
    else:  # the workflow's datasets.<name>.overrides reach load_config as a dict of dotted keys
        load = lambda: load_config(None, {"sample.num_samples": 10})  # noqa: E731
    with pytest.raises(ConfigError) as exc:
        load()
    message = str(exc.value)
    assert "'sample.num_samples' was renamed; use sample.default_num_images" in message and "\n" not in message
