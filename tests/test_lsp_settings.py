"""Settings: valid values are taken, invalid ones reported with the previous value kept."""

from vqedit.lsp.settings import Rule, Settings, update


def test_valid_settings_are_taken():
    new, errors = update(Settings(), {
        "debounceMs": 0, "severity": "hint", "labels": {"calm": "a calm text", "angry": "rage"},
        "rules": [{"label": "sport", "minScore": 0.7, "severity": "error", "message": "{label}!"}]})
    assert errors == []
    assert new == Settings(0, {"calm": "a calm text", "angry": "rage"},
                           (Rule("sport", 0.7, "error", "{label}!"),), "hint")


def test_each_invalid_value_is_reported_and_the_previous_value_kept():
    previous = Settings(debounce_ms=50, severity="warning")
    new, errors = update(previous, {
        "debounceMs": -1, "severity": "loud", "labels": {"only": "one"}, "rules": [{"x": 1}],
        "colour": "red"})
    assert new == previous
    assert len(errors) == 5
    assert any("unknown setting 'colour'" in e for e in errors)


def test_a_bad_rule_rejects_the_rules_but_not_the_other_settings():
    new, errors = update(Settings(), {"debounceMs": 10, "rules": [
        {"label": "sport"}, {"label": "tech", "minScore": 2}]})
    assert new.debounce_ms == 10 and new.rules == ()
    assert errors == ["invalid rules: rule 1: minScore must be a number in [0, 1], got 2; "
                      "keeping the previous value"]


def test_a_message_with_unknown_fields_is_refused():
    _, errors = update(Settings(), {"rules": [{"label": "sport", "message": "{nope}"}]})
    assert "may only use {label} and {score}" in errors[0]


def test_not_an_object():
    assert update(Settings(), ["debounceMs"])[1] == [
        "the vqedit settings must be an object, got ['debounceMs']"]
