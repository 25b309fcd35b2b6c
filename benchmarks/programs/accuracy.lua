-- accuracy.lua — the Lua interpreter's workload in the accuracy benchmark:
-- closures, tables, strings, coroutines; everything freed by lua_close at exit.
local function counter() local n = 0; return function() n = n + 1; return n end end
local c = counter()
local t = {}
for i = 1, 3000 do t[i] = {i = i, s = "k" .. i, f = c} end
local words = {}
for w in string.gmatch(string.rep("alpha beta gamma ", 200), "%a+") do words[#words + 1] = w:upper() end
local co = coroutine.wrap(function() for i = 1, 100 do coroutine.yield(i * 2) end end)
local sum = 0
for _ = 1, 100 do sum = sum + co() end
local keep = setmetatable({}, {__mode = "k"})
keep[t[1]] = true
print(#t, #words, sum, c(), table.concat(words, " ", 1, 3))
