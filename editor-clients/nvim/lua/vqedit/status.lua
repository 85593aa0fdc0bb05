-- The latest `vqedit/status` notification per document, and the statusline text made from it
-- (docs/lsp.md, "Notifications from the server"). The VS Code status bar uses the same words.
local M = {}

---@class vqedit.Status
---@field uri string|vim.NIL null: the model's state while no document is open
---@field version integer|nil
---@field state "loading"|"ready"|"error"
---@field label string|vim.NIL|nil
---@field score number|vim.NIL|nil
---@field message string|vim.NIL|nil

---@type table<string, vqedit.Status>
local by_uri = {}

--- JSON null arrives as vim.NIL; treat it as absent.
local function value(v)
  if v == vim.NIL then
    return nil
  end
  return v
end

--- Handler for the `vqedit/status` notification: keeps the status, redraws the statuslines and
--- fires `User VqeditStatus` (data: the status) for anyone who wants more than the text.
--- A status without a uri (the model's state while no document is open) belongs to no
--- statusline; it only fires the event.
function M.handler(_, status)
  if value(status.uri) ~= nil then
    by_uri[status.uri] = status
  end
  vim.cmd.redrawstatus({ bang = true })
  vim.api.nvim_exec_autocmds("User", { pattern = "VqeditStatus", data = status, modeline = false })
end

--- The latest status of buffer `bufnr` (0: the current one), or nil before the first.
---@return vqedit.Status|nil
function M.get(bufnr)
  return by_uri[vim.uri_from_bufnr(bufnr == nil and 0 or bufnr)]
end

--- Forget a buffer's status (when vqedit detaches from it), so no stale text is shown.
function M.forget(bufnr)
  by_uri[vim.uri_from_bufnr(bufnr)] = nil
end

--- The statusline text for a status: "vqedit: sport 0.93", "vqedit: loading", "vqedit: error",
--- "vqedit: —" (ready, no label yet); "" for none, so buffers vqedit does not serve show nothing.
---@param status vqedit.Status|nil
---@return string
function M.format(status)
  if status == nil then
    return ""
  elseif status.state == "loading" then
    return "vqedit: loading"
  elseif status.state == "error" then
    return "vqedit: error"
  elseif status.state ~= "ready" then
    return "vqedit: ?"
  end
  local label, score = value(status.label), value(status.score)
  if label == nil or score == nil then
    return "vqedit: —"
  end
  return string.format("vqedit: %s %.2f", label, score)
end

return M
