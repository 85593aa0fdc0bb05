// Arguments of the server commands and the labels offered at the cursor (src/commands.ts).
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

import * as commands from "../src/commands";

test("commands carry the arguments docs/lsp.md specifies", () => {
  assert.deepEqual(commands.recompute("file:///a.md"),
                   { command: "vqedit.recompute", arguments: ["file:///a.md"] });
  assert.deepEqual(commands.stats(), { command: "vqedit.stats", arguments: [] });
  assert.deepEqual(commands.text("file:///a.md"),
                   { command: "vqedit.text", arguments: ["file:///a.md"] });
  assert.deepEqual(commands.ignoreLabel("file:///a.md", 4, " sport "),
                   { command: "vqedit.ignoreLabel", arguments: ["file:///a.md", 4, "sport"] });
  assert.deepEqual(commands.clearIgnored("file:///a.md"),
                   { command: "vqedit.clearIgnored", arguments: ["file:///a.md"] });
});

test("palette ids never collide with the server's, which the language client registers", () => {
  const server = new Set(Object.values(commands.ServerCommand));
  for (const id of Object.values(commands.ClientCommand)) {
    assert.ok(!server.has(id as never), id);
  }
});

test("the palette shows exactly the commands the extension registers", () => {
  const manifest = JSON.parse(
    fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8"));
  const contributed = manifest.contributes.commands.map((c: { command: string }) => c.command);
  assert.deepEqual(contributed.sort(), Object.values(commands.ClientCommand).sort());
});

test("a bad line or an empty label is refused before anything is sent", () => {
  assert.throws(() => commands.ignoreLabel("file:///a.md", -1, "sport"), RangeError);
  assert.throws(() => commands.ignoreLabel("file:///a.md", 1.5, "sport"), RangeError);
  assert.throws(() => commands.ignoreLabel("file:///a.md", 0, "  "), RangeError);
});

const range = (start: number, end: number) => ({ start: { line: start }, end: { line: end } });

test("the labels at the cursor are those of vqedit diagnostics covering its line", () => {
  const diagnostics = [
    { source: "vqedit", code: "sport", range: range(0, 2) },
    { source: "vqedit", code: { value: "tech" }, range: range(2, 3) },
    { source: "vqedit", code: "sport", range: range(1, 1) },
    { source: "cspell", code: "typo", range: range(0, 9) },
    { source: "vqedit", code: "politics", range: range(5, 6) },
  ];
  assert.deepEqual(commands.labelsAtLine(diagnostics, 2), ["sport", "tech"]);
  assert.deepEqual(commands.labelsAtLine(diagnostics, 1), ["sport"]);
  assert.deepEqual(commands.labelsAtLine(diagnostics, 4), []);
});

test("statistics are shown as indented JSON", () => {
  assert.equal(commands.formatStats({ documents: 2 }), '{\n  "documents": 2\n}\n');
});
