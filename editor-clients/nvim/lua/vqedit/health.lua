-- :checkhealth vqedit — what stops the server from starting or attaching, said plainly.
local M = {}

function M.check()
  vim.health.start("vqedit")
  if vim.fn.has("nvim-0.11") == 1 then
    vim.health.ok("Neovim " .. tostring(vim.version()))
  else
    vim.health.error("Neovim 0.11 or newer is needed (vim.lsp.config / vim.lsp.enable)")
    return
  end
  local config = vim.lsp.config.vqedit
  if config == nil or not vim.lsp.is_enabled("vqedit") then
    vim.health.error("not set up", { 'call require("vqedit").setup({}) in your init.lua' })
    return
  end
  local executable = config.cmd[1]
  if vim.fn.executable(executable) == 1 then
    vim.health.ok(string.format("server command: %s (%s)", table.concat(config.cmd, " "),
      vim.fn.exepath(executable)))
  else
    vim.health.error(string.format("%s is not an executable on PATH", executable),
      { 'pass the full path: setup({ cmd = { "/path/to/.venv/bin/vqedit", "lsp" } })' })
  end
  local clients = vim.lsp.get_clients({ name = "vqedit" })
  vim.health.info(string.format("%d vqedit server(s) running; filetypes: %s", #clients,
    table.concat(config.filetypes, ", ")))
end

return M
