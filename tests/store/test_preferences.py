from __future__ import annotations

from pathlib import Path

from heyim_desktop.store.preferences import Preferences, load_preferences, save_preferences


def test_defaults_when_missing(tmp_path: Path) -> None:
    assert load_preferences(tmp_path) == Preferences()


def test_round_trip(tmp_path: Path) -> None:
    prefs = Preferences(model_folders=("/a", "/b"), default_steps=20, device="cpu", precision="bf16", keep_limit=100,
                        memory="low", last_settings={"prompt": "x"})
    save_preferences(prefs, tmp_path)
    back = load_preferences(tmp_path)
    assert back == prefs and back.last_settings == {"prompt": "x"}


def test_damaged_file_gives_defaults_and_is_kept_aside(tmp_path: Path) -> None:
    (tmp_path / "preferences.json").write_text("{not json", encoding="utf-8")
    assert load_preferences(tmp_path) == Preferences()
    assert (tmp_path / "preferences.damaged.json").is_file()


def test_wrong_types_fall_back_per_field(tmp_path: Path) -> None:
    (tmp_path / "preferences.json").write_text(
        '{"default_steps": "many", "model_folders": "/x", "device": "tpu", "keep_limit": 5, "precision": "int4",'
        ' "memory": "huge"}', encoding="utf-8")
    prefs = load_preferences(tmp_path)
    assert prefs.default_steps == 30 and prefs.model_folders == () and prefs.device == "auto" and prefs.keep_limit == 5
    assert prefs.precision == "auto" and prefs.memory == "auto"
