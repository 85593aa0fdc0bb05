/**
 * The `vqedit/status` notification (docs/lsp.md, "Notifications from the server"): the latest
 * one per document and the status bar text made from it. Pure: no VS Code import. The Neovim
 * plugin's statusline uses the same words.
 */

/** The notification's parameters as the server sends them. */
export interface Status {
  uri: string | null; // null: the model's state while no document is open
  version: number | null;
  state: "loading" | "ready" | "error";
  label: string | null;
  score: number | null;
  message: string | null;
}

export interface StatusView {
  text: string; // "$(icon) vqedit: sport 0.93"; $(...) is a VS Code codicon
  tooltip: string;
  error: boolean; // shown with the error background
}

/** What the status bar item shows for a document's latest status (undefined: none yet). */
export function statusView(status: Status | undefined): StatusView {
  if (status === undefined) {
    return { text: "vqedit", tooltip: "vqedit: no results for this document yet", error: false };
  }
  switch (status.state) {
    case "loading":
      return { text: "$(sync~spin) vqedit: loading",
               tooltip: "vqedit: the model is loading", error: false };
    case "error":
      return { text: "$(error) vqedit: error",
               tooltip: `vqedit: ${status.message ?? "unknown error"}`, error: true };
    case "ready":
      if (status.label === null || status.score === null) {
        return { text: "vqedit: —", tooltip: "vqedit: no label for this document yet",
                 error: false };
      }
      return { text: `vqedit: ${status.label} ${status.score.toFixed(2)}`,
               tooltip: `vqedit: the document reads as ${status.label} ` +
                        `(score ${status.score.toFixed(3)}, version ${status.version})`,
               error: false };
    default:
      return { text: "vqedit: ?",
               tooltip: `vqedit: unknown state ${JSON.stringify(status.state)}`, error: true };
  }
}

/**
 * The latest status of each document, by the uri the server was given. A status without a uri
 * belongs to no document, so it is not kept: the next document's own status follows.
 */
export class StatusBook {
  private readonly byUri = new Map<string, Status>();

  /** Keep `status`; true when a document's status changed (the status bar may need redrawing). */
  update(status: Status): boolean {
    if (status.uri === null) {
      return false;
    }
    this.byUri.set(status.uri, status);
    return true;
  }

  get(uri: string): Status | undefined {
    return this.byUri.get(uri);
  }

  forget(uri: string): void {
    this.byUri.delete(uri);
  }

  clear(): void {
    this.byUri.clear();
  }
}
