/**
 * The VS Code side of vqedit: starts `vqedit lsp` over stdio with vscode-languageclient, shows
 * the `vqedit/status` notification in a status bar item and puts the server's commands in the
 * palette. Everything else (diagnostics, hover, quick fixes) comes from the server through the
 * language client unchanged. The logic that needs no editor lives in settings.ts, status.ts and
 * commands.ts, which are unit-tested with `npm test`.
 */
import * as os from "node:os";
import * as vscode from "vscode";
import {
  ExecuteCommandRequest, LanguageClient, LanguageClientOptions, ServerOptions,
} from "vscode-languageclient/node";

import * as commands from "./commands";
import { ClientCommand } from "./commands";
import { SERVER_SETTINGS, serverCommand, serverSettings } from "./settings";
import { Status, StatusBook, statusView } from "./status";

const LANGUAGES = ["markdown", "plaintext"];

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("vqedit", { log: true });
  const statuses = new StatusBook();
  const item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  item.command = ClientCommand.stats;
  context.subscriptions.push(output, item);

  const refreshStatus = (): void => {
    const editor = vscode.window.activeTextEditor;
    if (client === undefined || editor === undefined
        || !LANGUAGES.includes(editor.document.languageId)) {
      item.hide();
      return;
    }
    const view = statusView(statuses.get(client.code2ProtocolConverter.asUri(editor.document.uri)));
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.backgroundColor = view.error
      ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
    item.show();
  };

  const launch = async (): Promise<void> => {
    client = createClient(output);
    client.onNotification("vqedit/status", (status: Status) => {
      if (statuses.update(status)) {
        refreshStatus();
      }
    });
    refreshStatus();
    await start(client);
  };

  context.subscriptions.push(
    vscode.window.onDidChangeActiveTextEditor(refreshStatus),
    vscode.workspace.onDidCloseTextDocument((document) => {
      if (client !== undefined) {
        statuses.forget(client.code2ProtocolConverter.asUri(document.uri));
      }
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("vqedit.server")) {
        const choice = await vscode.window.showInformationMessage(
          "vqedit: the server command changed; restart the server to use it.", "Restart");
        if (choice === "Restart") {
          await vscode.commands.executeCommand(ClientCommand.restart);
        }
      }
    }),
    register(ClientCommand.recompute, async (running) => {
      const editor = activeProse();
      await running.sendRequest(ExecuteCommandRequest.type,
        commands.recompute(running.code2ProtocolConverter.asUri(editor.document.uri)));
    }),
    register(ClientCommand.stats, async (running) => {
      const result = await running.sendRequest(ExecuteCommandRequest.type, commands.stats());
      const document = await vscode.workspace.openTextDocument(
        { language: "json", content: commands.formatStats(result) });
      await vscode.window.showTextDocument(document, { preview: true });
    }),
    register(ClientCommand.text, async (running) => {
      const editor = activeProse();
      const result = await running.sendRequest(ExecuteCommandRequest.type,
        commands.text(running.code2ProtocolConverter.asUri(editor.document.uri)));
      const document = await vscode.workspace.openTextDocument(
        { language: editor.document.languageId, content: (result as { text: string }).text });
      await vscode.window.showTextDocument(document, { preview: true });
    }),
    register(ClientCommand.ignoreLabel, async (running) => {
      const editor = activeProse();
      const line = editor.selection.active.line;
      const labels = commands.labelsAtLine(
        vscode.languages.getDiagnostics(editor.document.uri), line);
      if (labels.length === 0) {
        void vscode.window.showInformationMessage("vqedit: no vqedit diagnostic at the cursor.");
        return;
      }
      const label = labels.length === 1
        ? labels[0] : await vscode.window.showQuickPick(labels, { title: "Ignore which label?" });
      if (label !== undefined) {
        await running.sendRequest(ExecuteCommandRequest.type, commands.ignoreLabel(
          running.code2ProtocolConverter.asUri(editor.document.uri), line, label));
      }
    }),
    register(ClientCommand.clearIgnored, async (running) => {
      const editor = activeProse();
      const cleared = await running.sendRequest(ExecuteCommandRequest.type, commands.clearIgnored(
        running.code2ProtocolConverter.asUri(editor.document.uri)));
      void vscode.window.showInformationMessage(
        `vqedit: ${cleared} ignored label(s) of this document are reported again.`);
    }),
    // Not `register`: a server that failed to start must be restartable too.
    vscode.commands.registerCommand(ClientCommand.restart, async () => {
      statuses.clear();
      await client?.dispose(); // stops it if it runs; a client is not started twice
      await launch();
    }),
    vscode.commands.registerCommand(ClientCommand.showOutput, () => output.show()),
  );

  await launch();
}

export async function deactivate(): Promise<void> {
  await client?.dispose();
}

function createClient(output: vscode.LogOutputChannel): LanguageClient {
  // No `transport`: with TransportKind.stdio the client would append `--stdio`, which
  // `vqedit lsp` does not take; without one it still speaks over stdin and stdout.
  const serverOptions: ServerOptions = serverCommand(readSection(), os.homedir());
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.map((language) => ({ language })),
    initializationOptions: serverSettings(readSection()),
    outputChannel: output,
    synchronize: { configurationSection: "vqedit" },
    middleware: {
      workspace: {
        // The section also holds the extension's own settings; the server gets only its part.
        configuration: async (params, token, next) => {
          const result = await next(params, token);
          if (!Array.isArray(result)) {
            return result;
          }
          return result.map((value, i) => params.items[i]?.section === "vqedit"
            ? serverSettings(value ?? {}) : value);
        },
        // Push no values (they would include the extension's own): the server then pulls the
        // section, and `configuration` above answers with the server's part.
        didChangeConfiguration: (_sections, next) => next(undefined),
      },
    },
  };
  return new LanguageClient("vqedit", "vqedit", serverOptions, clientOptions);
}

/** The `vqedit` section as a plain object (VS Code fills in package.json's defaults). */
function readSection(): Record<string, unknown> {
  const section = vscode.workspace.getConfiguration("vqedit");
  const values: Record<string, unknown> = { server: section.get("server") };
  for (const name of SERVER_SETTINGS) {
    values[name] = section.get(name);
  }
  return values;
}

async function start(languageClient: LanguageClient): Promise<void> {
  try {
    await languageClient.start();
  } catch (error) {
    const executable = serverCommand(readSection(), os.homedir());
    void vscode.window.showErrorMessage(
      `vqedit: could not start \`${executable.command} ${executable.args.join(" ")}\` ` +
      `(${String(error)}). Set vqedit.server.path to the vqedit executable.`);
  }
}

/** A palette command that needs the running client; its failures become an error message. */
function register(
  id: string, run: (running: LanguageClient) => Promise<void>,
): vscode.Disposable {
  return vscode.commands.registerCommand(id, async () => {
    try {
      if (client === undefined || !client.isRunning()) {
        throw new Error("the language server is not running (see: vqedit: Show the log)");
      }
      await run(client);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      void vscode.window.showErrorMessage(`vqedit: ${message}`);
    }
  });
}

function activeProse(): vscode.TextEditor {
  const editor = vscode.window.activeTextEditor;
  if (editor === undefined || !LANGUAGES.includes(editor.document.languageId)) {
    throw new Error("open a Markdown or plain text document first");
  }
  return editor;
}
