// The status bar text for `vqedit/status` (src/status.ts).
import * as assert from "node:assert/strict";
import { test } from "node:test";

import { Status, StatusBook, statusView } from "../src/status";

const base: Status = {
  uri: "file:///a.md", version: 7, state: "ready", label: "sport", score: 0.9349, message: null,
};

test("a ready document shows its label and score with two decimals", () => {
  const view = statusView(base);
  assert.equal(view.text, "vqedit: sport 0.93");
  assert.match(view.tooltip, /sport \(score 0\.935, version 7\)/);
  assert.equal(view.error, false);
});

test("loading shows a spinner, errors show the server's message", () => {
  assert.equal(statusView({ ...base, state: "loading", label: null, score: null }).text,
               "$(sync~spin) vqedit: loading");
  const error = statusView({ ...base, state: "error", message: "daemon refused: bad head" });
  assert.equal(error.text, "$(error) vqedit: error");
  assert.equal(error.tooltip, "vqedit: daemon refused: bad head");
  assert.equal(error.error, true);
});

test("no status yet, or ready without a label, says so instead of showing stale text", () => {
  assert.equal(statusView(undefined).text, "vqedit");
  assert.equal(statusView({ ...base, label: null, score: null }).text, "vqedit: —");
});

test("an unknown state from a newer server is shown as such", () => {
  const view = statusView({ ...base, state: "paused" as Status["state"] });
  assert.equal(view.text, "vqedit: ?");
  assert.match(view.tooltip, /"paused"/);
});

test("the book keeps each document's latest status and forgets closed ones", () => {
  const book = new StatusBook();
  assert.equal(book.update(base), true);
  assert.equal(book.update({ ...base, version: 8, label: "tech" }), true);
  assert.equal(book.get("file:///a.md")?.label, "tech");
  assert.equal(book.get("file:///b.md"), undefined);
  book.forget("file:///a.md");
  assert.equal(book.get("file:///a.md"), undefined);
});

test("a status without a document (no file open) is shown for none", () => {
  const book = new StatusBook();
  assert.equal(book.update({ ...base, uri: null, version: null, state: "loading" }), false);
  assert.equal(book.get("file:///a.md"), undefined);
});
