-- wrk script for the "post4k" scenario: every request is a POST of a fixed
-- 4 KiB body to the origin's /echo endpoint (which echoes it back).
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 256) -- 4096 bytes
wrk.headers["Content-Type"] = "application/octet-stream"
