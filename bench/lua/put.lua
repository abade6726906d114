-- PUT/PATCH requests from WRITE_BODIES, one "path<TAB>json body" per line, round robin.
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
local report = require("report")
local reqs = {}
for line in io.lines(os.getenv("WRITE_BODIES")) do
  local path, body = line:match("^([^\t]+)\t(.*)$")
  reqs[#reqs + 1] = {path, body}
end
local method = os.getenv("WRITE_METHOD") or "PUT"
local headers = {["Authorization"] = "Bearer " .. os.getenv("TOKEN"), ["Content-Type"] = "application/json"}
local i = 0
function init(args) i = math.random(#reqs) end
function request()
  i = i % #reqs + 1
  return wrk.format(method, reqs[i][1], headers, reqs[i][2])
end
done = report.done
