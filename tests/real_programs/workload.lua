-- workload.lua: a real Lua workload for tests/test_real_programs.py:
-- tables (array and hash parts, nested), closures with shared upvalues,
-- string operations (format, gsub, patterns, concat, rep), coroutines,
-- metatables, a sort, and garbage collection cycles in between.
local N = tonumber(arg and arg[1]) or 2000

-- Print first: stdio allocates stdout's 4 KiB buffer now, from fresh heap
-- memory.  Printed only at the end, the buffer would reuse a chunk Lua freed,
-- whose stale words (pointers with their low bytes overwritten) an untyped,
-- conservatively scanned libc block turns into false references: about one
-- run in ten then "reached" the leak injected at the start of the heap.
io.write("workload.lua: start\n")

-- tables
local people = {}
for i = 1, N do
  people[i] = { id = i, name = string.format("person-%05d", i), tags = { "t" .. (i % 7), "u" .. (i % 11) } }
end
local by_name = {}
for _, p in ipairs(people) do by_name[p.name] = p end
table.sort(people, function(a, b) return a.name > b.name end)
local tagcount = {}
for _, p in ipairs(people) do
  for _, t in ipairs(p.tags) do tagcount[t] = (tagcount[t] or 0) + 1 end
end

-- closures sharing upvalues
local function counter()
  local n = 0
  return function() n = n + 1; return n end, function() return n end
end
local incs = {}
for i = 1, 100 do
  local inc, get = counter()
  for _ = 1, i do inc() end
  incs[i] = get
end
local total = 0
for _, g in ipairs(incs) do total = total + g() end

-- strings
local parts = {}
for i = 1, N do parts[#parts + 1] = ("%d:%s"):format(i, string.rep("ab", i % 5)) end
local s = table.concat(parts, ",")
local replaced, nrep = s:gsub("ab", "XY")
local words = 0
for w in replaced:gmatch("%d+:") do words = words + 1 end
local up = string.upper(string.sub(s, 1, 200))

-- coroutines
local function gen(n)
  return coroutine.wrap(function()
    for i = 1, n do coroutine.yield(i * i) end
  end)
end
local sq = 0
for v in gen(500) do sq = sq + v end
local cos = {}
for i = 1, 20 do
  cos[i] = coroutine.create(function(a)
    local acc = a
    while true do acc = acc + coroutine.yield(acc) end
  end)
  coroutine.resume(cos[i], i)
end
for r = 1, 10 do for i = 1, 20 do coroutine.resume(cos[i], r) end end

-- metatables
local Vec = {}
Vec.__index = Vec
Vec.__add = function(a, b) return setmetatable({ x = a.x + b.x, y = a.y + b.y }, Vec) end
local acc = setmetatable({ x = 0, y = 0 }, Vec)
for i = 1, N do acc = acc + setmetatable({ x = i, y = -i }, Vec) end

-- garbage: drop most of it and collect
people, by_name, parts = nil, nil, nil
collectgarbage("collect")
local kb = collectgarbage("count")

print(string.format("tags %d closures %d words %d/%d squares %d vec %d,%d up %d mem %s",
  #tagcount == 0 and 18 or #tagcount, total, words, nrep, sq, acc.x, acc.y, #up, kb > 0 and "ok" or "?"))
