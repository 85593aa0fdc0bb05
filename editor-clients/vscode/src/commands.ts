/**
 * Arguments for the server's commands (docs/lsp.md, "Commands"), built from what the editor
 * knows. Pure: no VS Code import. The palette commands have their own ids (ClientCommand)
 * because vscode-languageclient registers the server's ids itself.
 */

export const ServerCommand = {
  recompute: "vqedit.recompute",
  stats: "vqedit.stats",
  ignoreLabel: "vqedit.ignoreLabel",
  clearIgnored: "vqedit.clearIgnored",
  text: "vqedit.text",
} as const;

export const ClientCommand = {
  recompute: "vqedit.recomputeDocument",
  stats: "vqedit.showStats",
  ignoreLabel: "vqedit.ignoreLabelAtCursor",
  clearIgnored: "vqedit.clearIgnoredInDocument",
  text: "vqedit.showServerText",
  restart: "vqedit.restartServer",
  showOutput: "vqedit.showOutput",
} as const;

export interface ExecuteCommand {
  command: string;
  arguments: unknown[];
}

/** The subset of a diagnostic the commands need (VS Code's and LSP's both fit). */
export interface DiagnosticLike {
  source?: string;
  code?: string | number | { value: string | number };
  range: { start: { line: number }; end: { line: number } };
}

export function recompute(uri: string): ExecuteCommand {
  return { command: ServerCommand.recompute, arguments: [uri] };
}

export function stats(): ExecuteCommand {
  return { command: ServerCommand.stats, arguments: [] };
}

/** The server's own copy of a document, `{uri, version, text}`: a debugging aid. */
export function text(uri: string): ExecuteCommand {
  return { command: ServerCommand.text, arguments: [uri] };
}

export function ignoreLabel(uri: string, line: number, label: string): ExecuteCommand {
  if (!Number.isInteger(line) || line < 0) {
    throw new RangeError(`line must be a 0-based line number, got ${line}`);
  }
  if (label.trim() === "") {
    throw new RangeError("label must not be empty");
  }
  return { command: ServerCommand.ignoreLabel, arguments: [uri, line, label.trim()] };
}

/** Report every label of the document again; the server answers how many it forgot. */
export function clearIgnored(uri: string): ExecuteCommand {
  return { command: ServerCommand.clearIgnored, arguments: [uri] };
}

/**
 * The labels of vqedit's diagnostics over `line` (their code is the label), without repeats,
 * in the order of the diagnostics: what "ignore a label here" offers to pick from.
 */
export function labelsAtLine(diagnostics: readonly DiagnosticLike[], line: number): string[] {
  const labels: string[] = [];
  for (const d of diagnostics) {
    if (d.source !== "vqedit" || line < d.range.start.line || line > d.range.end.line) {
      continue;
    }
    const code = typeof d.code === "object" ? d.code.value : d.code;
    if (code !== undefined && !labels.includes(String(code))) {
      labels.push(String(code));
    }
  }
  return labels;
}

/** Statistics (any JSON value) as indented text for a read-only document. */
export function formatStats(result: unknown): string {
  return JSON.stringify(result, null, 2) + "\n";
}
