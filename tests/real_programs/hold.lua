-- hold.lua: run workload.lua (arg[1]), then build more live data and wait for a
-- line on stdin, so the test can take a snapshot of a live interpreter.
dofile(arg[1])
local t = {}
for i = 1, 20000 do t[i] = { i, tostring(i), function() return i end } end
io.write("ready\n"); io.flush()
io.read("l")
print(#t)
