"""The VS Code extension (editor-clients/vscode) installs from its lock file, compiles and passes
its unit tests: `npm ci`, then `npm test` (tsc, then `node --test` on the logic that needs no
VS Code: settings → initializationOptions, status text, command arguments). No VS Code is
downloaded; the extension's VS Code glue is type-checked against `@types/vscode` by tsc.
"""

import shutil
import subprocess
from pathlib import Path

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
