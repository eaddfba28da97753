-- wrk script for validate_cold: every request carries a different valid token.
--   wrk ... -s bench/cold.lua <url> -- <tokens-file> <start-index>
-- Tokens are read once per wrk thread and cycled through from <start-index>, so no token repeats
-- within a run shorter than the list (and the filter's per-VM cache, 1024 entries, never hits).

local tokens = {}
local next_index = 1

function init(args)
  local file = args[1]
  if file == nil then
    error("cold.lua: usage: -- <tokens-file> <start-index>")
  end
  for line in io.lines(file) do
    if #line > 0 then
      tokens[#tokens + 1] = "Bearer " .. line
    end
  end
  if #tokens == 0 then
    error("cold.lua: no tokens in " .. file)
  end
  next_index = (tonumber(args[2] or "0") % #tokens) + 1
end

function request()
  local value = tokens[next_index]
  next_index = (next_index % #tokens) + 1
  return wrk.format(nil, nil, { ["Authorization"] = value })
end
