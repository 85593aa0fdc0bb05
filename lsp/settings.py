"""The `vqedit` settings section: names, defaults, and validation that keeps the previous value.

`update(previous, raw)` reads the names it knows from a client's section; an invalid value is
reported and the previous value stays, so a typo in one setting never resets the others.
Names are docs/lsp.md's; unknown names are reported too, since a setting that silently does
nothing is what users of other prose servers complain about most.
"""

from dataclasses import dataclass, field, replace
from typing import Any

from lsprotocol import types

from vqedit.daemon.protocol import MAX_LABELS

SEVERITIES = {"error": types.DiagnosticSeverity.Error,
              "warning": types.DiagnosticSeverity.Warning,
              "information": types.DiagnosticSeverity.Information,
              "hint": types.DiagnosticSeverity.Hint}


@dataclass(frozen=True)
class Rule:
    label: str  # the paragraph label that becomes a diagnostic
    min_score: float = 0.5  # the label's score must reach this
    severity: str | None = None  # a key of SEVERITIES; None: the `severity` setting
    message: str = "reads like {label} ({score})"  # {label} and {score} are filled in


@dataclass(frozen=True)
class Settings:
    debounce_ms: int = 100  # quiet time after the last change before the document is sent
    labels: dict[str, str] = field(default_factory=dict)  # zero-shot {name: description}
    rules: tuple[Rule, ...] = ()  # which paragraph labels become diagnostics
    severity: str = "information"  # of a rule that names none

    def as_client_json(self) -> dict[str, Any]:
        """The effective settings under their client names, for the log."""
        return {"debounceMs": self.debounce_ms, "labels": self.labels,
                "rules": [{"label": r.label, "minScore": r.min_score, "severity": r.severity,
                           "message": r.message} for r in self.rules],
                "severity": self.severity}


def update(previous: Settings, raw: Any) -> tuple[Settings, list[str]]:
    """`previous` with the valid values of `raw` (a client's section) and a list of errors."""
    if raw is None:
        return previous, []
    if not isinstance(raw, dict):
        return previous, [f"the vqedit settings must be an object, got {raw!r}"]
    values, errors = {}, []
    for name, value in raw.items():
        parse = PARSERS.get(name)
        if parse is None:
            errors.append(f"unknown setting {name!r} (known: {', '.join(sorted(PARSERS))})")
            continue
        try:
            field_name, parsed = parse(value)
        except ValueError as e:
            errors.append(f"invalid {name}: {e}; keeping the previous value")
            continue
        values[field_name] = parsed
    return replace(previous, **values), errors


def _debounce(value: Any) -> tuple[str, int]:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"an integer ≥ 0 is needed, got {value!r}")
    return "debounce_ms", value


def _labels(value: Any) -> tuple[str, dict[str, str]]:
    """The daemon's rules for labels (protocol.py), checked here so the user hears of them."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"an object {{name: description}} is needed, got {value!r}")
    if value and not 2 <= len(value) <= MAX_LABELS:
        raise ValueError(f"zero-shot labels need 2 to {MAX_LABELS} names (or {{}} for the "
                         f"topic head), got {len(value)}")
    wordless = [name for name, text in value.items()
                if not name.strip() or not any(c.isalnum() for c in text)]
    if wordless:
        raise ValueError(f"every label needs a name and a description with words: {wordless}")
    return "labels", dict(value)


def _severity_name(value: Any, where: str) -> str:
    if value not in SEVERITIES:
        raise ValueError(f"{where} must be one of {', '.join(SEVERITIES)}, got {value!r}")
    return value


def _rule(value: Any, index: int) -> Rule:
    where = f"rule {index}"
    if not isinstance(value, dict) or not isinstance(value.get("label"), str):
        raise ValueError(f"{where} must be an object with a string label, got {value!r}")
    unknown = set(value) - {"label", "minScore", "severity", "message"}
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
    rule = Rule(value["label"])
    if "minScore" in value:
        score = value["minScore"]
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise ValueError(f"{where}: minScore must be a number in [0, 1], got {score!r}")
        rule = replace(rule, min_score=float(score))
    if "severity" in value:
        rule = replace(rule, severity=_severity_name(value["severity"], f"{where}: severity"))
    if "message" in value:
        if not isinstance(value["message"], str):
            raise ValueError(f"{where}: message must be a string")
        try:
            value["message"].format(label="", score="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{where}: message may only use {{label}} and {{score}} "
                             f"({e})") from None
        rule = replace(rule, message=value["message"])
    return rule


def _rules(value: Any) -> tuple[str, tuple[Rule, ...]]:
    if not isinstance(value, list):
        raise ValueError(f"an array of rules is needed, got {value!r}")
    return "rules", tuple(_rule(v, i) for i, v in enumerate(value))


PARSERS = {"debounceMs": _debounce, "labels": _labels, "rules": _rules,
           "severity": lambda value: ("severity", _severity_name(value, "severity"))}
