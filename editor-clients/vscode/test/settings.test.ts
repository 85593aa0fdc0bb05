// The split of the `vqedit` section between the extension and the server (src/settings.ts).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import { SERVER_SETTINGS, serverCommand, serverSettings } from "../src/settings";

test("the server starts as `vqedit lsp` when nothing is configured", () => {
  assert.deepEqual(serverCommand({}, "/home/me"), { command: "vqedit", args: ["lsp"] });
  assert.deepEqual(serverCommand({ server: { path: "  " } }, "/home/me"),
                   { command: "vqedit", args: ["lsp"] });
});

test("the configured path and extra arguments are used, ~/ expanded", () => {
  const section = { server: { path: "~/vqedit/.venv/bin/vqedit", extraArgs: ["--in-process"] } };
  assert.deepEqual(serverCommand(section, "/home/me"), {
    command: "/home/me/vqedit/.venv/bin/vqedit", args: ["lsp", "--in-process"],
  });
});

test("extra arguments that are not strings are dropped, not passed as [object Object]", () => {
  const section = { server: { extraArgs: ["--in-process", 3, { a: 1 }] } };
  assert.deepEqual(serverCommand(section, "/h").args, ["lsp", "--in-process"]);
});

test("the server gets its settings unchanged and never the extension's own", () => {
  const rules = [{ label: "sport", minScore: 0.7, severity: "warning" }];
  const section = {
    server: { path: "/opt/vqedit" },
    debounceMs: 250,
    labels: { formal: "formal prose", casual: "a chat" },
    rules,
    severity: "hint",
    editLog: "/tmp/edits.jsonl",
    somethingElse: true,
  };
  assert.deepEqual(serverSettings(section), {
    debounceMs: 250, labels: { formal: "formal prose", casual: "a chat" }, rules, severity: "hint",
    editLog: "/tmp/edits.jsonl",
  });
});

test("invalid values reach the server, which reports them; missing ones are left out", () => {
  assert.deepEqual(serverSettings({ debounceMs: -5, severity: null }), { debounceMs: -5 });
});

test("every server setting package.json contributes reaches the server", () => {
  // tests/test_vscode_extension.py checks package.json against the server's own list.
  const manifest = JSON.parse(
    fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
  const contributed = Object.keys(manifest.contributes.configuration.properties)
    .filter((name) => !name.startsWith("vqedit.server."))
    .map((name) => name.slice("vqedit.".length));
  assert.deepEqual([...SERVER_SETTINGS].sort(), contributed.sort());
});
