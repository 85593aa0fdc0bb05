/**
 * The `vqedit` settings section, split into what the extension itself uses (how to start the
 * server) and what the server reads (docs/lsp.md, "Settings"). Pure: no VS Code import, so it is
 * unit-tested without an editor.
 */

/** The settings the server understands; everything else in the section stays in the editor. */
export const SERVER_SETTINGS = ["debounceMs", "labels", "rules", "severity", "editLog"] as const;

/** vscode-languageclient's `Executable` without a transport: plain stdio, no `--stdio`. */
export interface Executable {
  command: string;
  args: string[];
}

/**
 * The process to start: `vqedit.server.path` (default `vqedit`) with `lsp` and
 * `vqedit.server.extraArgs`. A leading `~/` is expanded because editors do not run a shell.
 */
export function serverCommand(section: Record<string, unknown>, home: string): Executable {
  const server = asObject(section.server);
  const path = typeof server.path === "string" && server.path.trim() !== ""
    ? server.path.trim() : "vqedit";
  const extra = Array.isArray(server.extraArgs)
    ? server.extraArgs.filter((a): a is string => typeof a === "string") : [];
  return { command: path.startsWith("~/") ? home + path.slice(1) : path, args: ["lsp", ...extra] };
}

/**
 * The server's part of the section, for `initializationOptions` and for answers to
 * `workspace/configuration`: the extension's own settings (`server`) and anything unknown are
 * left out, so the server never reports them as invalid. Values are passed unchanged because the
 * server validates them and reports what it rejects.
 */
export function serverSettings(section: Record<string, unknown>): Record<string, unknown> {
  const settings: Record<string, unknown> = {};
  for (const name of SERVER_SETTINGS) {
    if (section[name] !== undefined && section[name] !== null) {
      settings[name] = section[name];
    }
  }
  return settings;
}

function asObject(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? value as Record<string, unknown> : {};
}
