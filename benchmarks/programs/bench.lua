-- bench.lua — the Lua workload of the tool-overhead benchmark (benchmarks/overhead_tools).
-- Usage: lua bench.lua [SCALE]   (default 1): fib, table churn, string ops.
local scale = tonumber(arg and arg[1]) or 1

local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end

local t0 = os.clock()
local f = 0
for _ = 1, math.max(1, math.floor(scale)) do f = fib(22) end

-- table churn: many small tables, most dropped, some kept
local kept = {}
for i = 1, math.floor(60000 * scale) do
  local t = {id = i, name = "n" .. i, kids = {i, i + 1, i + 2}}
  if i % 7 == 0 then kept[#kept + 1] = t end
  if #kept > 5000 then kept = {} end
end

-- string ops
local parts = {}
for i = 1, math.floor(20000 * scale) do
  parts[#parts + 1] = string.format("%05d:%s", i, string.rep("x", i % 17))
end
local s = table.concat(parts, ",")
local count = 0
for w in s:gmatch("(%d+):") do count = count + 1 end
local up = s:sub(1, 1000):upper():reverse()

print(string.format("fib %d, kept %d, words %d, len %d, %s, %.2f s",
                    f, #kept, count, #s, up:sub(1, 8), os.clock() - t0))
