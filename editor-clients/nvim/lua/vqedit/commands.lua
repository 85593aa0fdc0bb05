-- The server's commands (docs/lsp.md, "Commands"), run through `workspace/executeCommand` on
-- the vqedit client attached to a buffer, and the user commands that call them.
local M = {}

local function notify_error(what, err)
  vim.notify(string.format("vqedit: %s failed: %s", what, err.message or tostring(err)),
    vim.log.levels.ERROR)
end

--- A buffer number with 0 and nil meaning the current buffer.
local function resolve(bufnr)
  if bufnr == nil or bufnr == 0 then
    return vim.api.nvim_get_current_buf()
  end
  return bufnr
end

--- The vqedit client attached to `bufnr`, or nil with an error message saying why.
local function client_for(bufnr)
  local client = vim.lsp.get_clients({ bufnr = bufnr, name = "vqedit" })[1]
  if client == nil then
    vim.notify("vqedit: the language server is not attached to this buffer (:checkhealth vqedit)",
      vim.log.levels.ERROR)
  end
  return client
end

--- Run server command `command` with `arguments` for buffer `bufnr`; `on_result(result)` gets
--- the reply, errors become a message.
function M.execute(bufnr, command, arguments, on_result)
  bufnr = resolve(bufnr)
  local client = client_for(bufnr)
  if client == nil then
    return
  end
  client:request("workspace/executeCommand", { command = command, arguments = arguments },
    function(err, result)
      if err then
        notify_error(command, err)
      elseif on_result then
        on_result(result)
      end
    end, bufnr)
end

--- Recompute buffer `bufnr` (0: current) from scratch.
function M.recompute(bufnr)
  bufnr = resolve(bufnr)
  M.execute(bufnr, "vqedit.recompute", { vim.uri_from_bufnr(bufnr) })
end

--- The engine's statistics, passed to `on_result` (default: shown in a floating window).
function M.stats(on_result)
  M.execute(0, "vqedit.stats", {}, on_result or function(result)
    vim.lsp.util.open_floating_preview(vim.split(vim.inspect(result), "\n"), "lua",
      { border = "rounded", title = " vqedit stats " })
  end)
end

--- The server's own copy of buffer `bufnr` (0: current), `{ uri, version, text }`, passed to
--- `on_result` (default: shown in a scratch window). A debugging aid: it must equal the buffer.
function M.text(bufnr, on_result)
  bufnr = resolve(bufnr)
  M.execute(bufnr, "vqedit.text", { vim.uri_from_bufnr(bufnr) }, on_result or function(result)
    vim.cmd.new()
    vim.bo.buftype, vim.bo.bufhidden, vim.bo.swapfile = "nofile", "wipe", false
    vim.api.nvim_buf_set_lines(0, 0, -1, false, vim.split(result.text, "\n"))
    vim.api.nvim_buf_set_name(0, string.format("vqedit-text://%s@%s", result.uri, result.version))
    vim.bo.modifiable = false
  end)
end

--- The labels of vqedit diagnostics covering 0-based `line` of `bufnr` (their code is the label).
---@return string[]
function M.labels_at(bufnr, line)
  local labels = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr)) do
    if d.source == "vqedit" and d.lnum <= line and line <= (d.end_lnum or d.lnum)
      and d.code ~= nil and not vim.list_contains(labels, tostring(d.code)) then
      table.insert(labels, tostring(d.code))
    end
  end
  return labels
end

--- Stop reporting `label` for the paragraph at the cursor; without a label, the one of the
--- diagnostic under the cursor (asked for when there are several).
function M.ignore_label(label)
  local bufnr = vim.api.nvim_get_current_buf()
  local line = vim.api.nvim_win_get_cursor(0)[1] - 1
  local ignore = function(chosen)
    if chosen ~= nil and chosen ~= "" then
      M.execute(bufnr, "vqedit.ignoreLabel", { vim.uri_from_bufnr(bufnr), line, chosen })
    end
  end
  if label ~= nil and label ~= "" then
    return ignore(label)
  end
  local labels = M.labels_at(bufnr, line)
  if #labels == 0 then
    vim.notify("vqedit: no vqedit diagnostic at the cursor; name a label", vim.log.levels.WARN)
  elseif #labels == 1 then
    ignore(labels[1])
  else
    vim.ui.select(labels, { prompt = "Ignore which label?" }, ignore)
  end
end

--- Report the labels ignored in buffer `bufnr` (0: current) again: forget them on the server.
function M.clear_ignored(bufnr)
  bufnr = resolve(bufnr)
  M.execute(bufnr, "vqedit.clearIgnored", { vim.uri_from_bufnr(bufnr) }, function(cleared)
    vim.notify(("vqedit: %d ignored label(s) reported again"):format(cleared))
  end)
end

--- Create :VqeditRecompute, :VqeditStats, :VqeditText, :VqeditIgnore [label] and
--- :VqeditClearIgnored.
function M.create_user_commands()
  vim.api.nvim_create_user_command("VqeditRecompute", function()
    M.recompute(0)
  end, { desc = "vqedit: recompute this document from scratch" })
  vim.api.nvim_create_user_command("VqeditStats", function()
    M.stats()
  end, { desc = "vqedit: show the engine's statistics" })
  vim.api.nvim_create_user_command("VqeditText", function()
    M.text(0)
  end, { desc = "vqedit: show the server's copy of this document (it must equal the buffer)" })
  vim.api.nvim_create_user_command("VqeditIgnore", function(args)
    M.ignore_label(args.args)
  end, {
    nargs = "?",
    desc = "vqedit: stop reporting a label for the paragraph at the cursor",
    complete = function()
      return M.labels_at(0, vim.api.nvim_win_get_cursor(0)[1] - 1)
    end,
  })
  vim.api.nvim_create_user_command("VqeditClearIgnored", function()
    M.clear_ignored(0)
  end, { desc = "vqedit: report the labels ignored in this document again" })
end

return M
