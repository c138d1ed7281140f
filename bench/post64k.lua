-- wrk script: every request is a POST of 64 KiB (65,536 bytes of 'x') to the echo app. The
-- body is set once (no per-request hook: wrk stays on its fast path); report.lua adds the
-- done() hook printing the JSON summary.
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
