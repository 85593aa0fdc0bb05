"""The VS Code extension (editor-clients/vscode) installs from its lock file, compiles and passes
its unit tests: `npm ci`, then `npm test` (tsc, then `node --test` on the logic that needs no
VS Code: settings → initializationOptions, status text, command arguments). No VS Code is
downloaded; the extension's VS Code glue is type-checked against `@types/vscode` by tsc.
And its contributed settings are the server's own (`vqedit.lsp.settings`).
"""

import json
import shutil
import subprocess
from pathlib import Path

from vqedit.lsp import settings

EXTENSION = Path(__file__).resolve().parents[1] / "editor-clients" / "vscode"


def npm(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("npm")
    assert executable, "npm (Node.js 20 or newer) is needed to build editor-clients/vscode"
    return subprocess.run([executable, *args], cwd=EXTENSION, capture_output=True, text=True,
                          timeout=600, check=False)


def test_extension_installs_compiles_and_passes_its_unit_tests():
    for step in (("ci", "--no-audit", "--no-fund"), ("test",)):
        done = npm(*step)
        assert done.returncode == 0, f"npm {step[0]}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert (EXTENSION / "out" / "src" / "extension.js").is_file()  # package.json's "main"


def test_contributed_settings_are_the_servers_with_its_defaults():
    """package.json offers exactly the settings the server reads (besides the extension's own
    `vqedit.server.*`), with the server's defaults and choices: none silently does nothing, and
    VS Code's defaults never disagree with the server's."""
    manifest = json.loads((EXTENSION / "package.json").read_text())
    properties = manifest["contributes"]["configuration"]["properties"]
    offered = {name.removeprefix("vqedit."): spec for name, spec in properties.items()
               if not name.startswith("vqedit.server.")}
    assert offered.keys() == settings.PARSERS.keys()
    assert all(spec.get("markdownDescription") for spec in properties.values())
    defaults = {name: spec["default"] for name, spec in offered.items()}
    assert defaults == settings.Settings().as_client_json()
    assert settings.update(settings.Settings(), defaults) == (settings.Settings(), [])
    assert offered["severity"]["enum"] == list(settings.SEVERITIES)

    rule = offered["rules"]["items"]["properties"]
    default_rule = settings.Rule("any")
    assert rule["severity"]["enum"] == list(settings.SEVERITIES)
    assert rule["minScore"]["default"] == default_rule.min_score
    assert rule["message"]["default"] == default_rule.message
    example = {name: spec.get("default", spec.get("enum", ["any"])[0])
               for name, spec in rule.items()}
    assert settings.update(settings.Settings(), {"rules": [example]})[1] == []
