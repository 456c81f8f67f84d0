-- wrk: a URL never asked for before on every request (the cache-miss path):
-- PATH?miss=PREFIX-THREAD-N, where PREFIX is the script's first argument (wrk ... -- PREFIX).
-- Prints the same JSON line as wrk-report.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk-report.lua")

local prefix, n = "x", 0

init = function(args)
  prefix = (args[1] or "x") .. "-" .. tostring(wrk.thread):gsub("[^%w]", "")
end

request = function()
  n = n + 1
  return wrk.format("GET", wrk.path .. "?miss=" .. prefix .. "-" .. n)
end
