-- vqedit for Neovim 0.11+: starts `vqedit lsp` for Markdown and plain text through
-- `vim.lsp.config` / `vim.lsp.enable`, and adds a statusline component and user commands.
-- Diagnostics, hover and quick fixes come from the server through Neovim's own LSP client.
--
--   require("vqedit").setup({ settings = { rules = { { label = "sport" } } } })
--   vim.o.statusline = "%f %= %{v:lua.require'vqedit'.status()}"
--
-- `:help vqedit` has every option.
local commands = require("vqedit.commands")
local status = require("vqedit.status")

local M = {}

---@class vqedit.Options
---@field cmd string[] the server command (default { "vqedit", "lsp" })
---@field filetypes string[] buffers to attach to (default { "markdown", "text" })
---@field root_markers string[] files that mark a project root (default { ".git" })
---@field settings table the `vqedit` settings of docs/lsp.md: debounceMs, labels, rules, severity, editLog

---@type vqedit.Options
M.defaults = {
  cmd = { "vqedit", "lsp" },
  filetypes = { "markdown", "text" },
  root_markers = { ".git" },
  settings = {},
}

--- The settings as the server must see them: `labels` is a JSON object even when empty (an
--- empty Lua table would be sent as an array, which the server rejects).
local function server_settings(settings)
  local copy = vim.deepcopy(settings)
  if copy.labels ~= nil and vim.tbl_isempty(copy.labels) then
    copy.labels = vim.empty_dict()
  end
  if vim.tbl_isempty(copy) then
    return vim.empty_dict()
  end
  return copy
end

--- Configure and enable the `vqedit` language server; see `:help vqedit-setup`.
---@param opts vqedit.Options|nil
function M.setup(opts)
  if vim.fn.has("nvim-0.11") == 0 then
    vim.notify("vqedit: Neovim 0.11 or newer is needed (vim.lsp.config)", vim.log.levels.ERROR)
    return
  end
  opts = vim.tbl_deep_extend("force", M.defaults, opts or {})
  vim.validate("cmd", opts.cmd, "table")
  vim.validate("filetypes", opts.filetypes, "table")
  vim.validate("settings", opts.settings, "table")
  local settings = server_settings(opts.settings)
  vim.lsp.config("vqedit", {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    -- Answers `workspace/configuration` (section "vqedit") and didChangeConfiguration.
    settings = { vqedit = settings },
    init_options = settings,
    -- The server speaks of "plaintext"; Neovim's filetype for it is "text".
    get_language_id = function(_, filetype)
      return filetype == "text" and "plaintext" or filetype
    end,
    handlers = { ["vqedit/status"] = status.handler },
  })
  -- A buffer the server no longer serves (it exited, or the buffer was detached) shows no
  -- stale label.
  vim.api.nvim_create_autocmd("LspDetach", {
    group = vim.api.nvim_create_augroup("vqedit", { clear = true }),
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if client ~= nil and client.name == "vqedit" then
        status.forget(args.buf)
        vim.cmd.redrawstatus({ bang = true })
      end
    end,
  })
  vim.lsp.enable("vqedit")
  -- Servers already running hear of the new settings; the server then pulls them again.
  for _, client in ipairs(vim.lsp.get_clients({ name = "vqedit" })) do
    client.settings = { vqedit = settings }
    client:notify("workspace/didChangeConfiguration", { settings = client.settings })
  end
  commands.create_user_commands()
end

--- The statusline component: "vqedit: sport 0.93" for the document's best label and score,
--- "vqedit: loading" while the model loads, "" in buffers vqedit does not serve.
---@param bufnr integer|nil default: the current buffer
---@return string
function M.status(bufnr)
  return status.format(status.get(bufnr))
end

M.recompute = commands.recompute
M.stats = commands.stats
M.text = commands.text
M.ignore_label = commands.ignore_label
M.clear_ignored = commands.clear_ignored

return M
