-- PUT/PATCH bodies from WRITE_BODIES (one JSON per line) to wrk's URL, round robin.
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
local report = require("report")
local bodies = {}
for line in io.lines(os.getenv("WRITE_BODIES")) do bodies[#bodies + 1] = line end
wrk.method = os.getenv("WRITE_METHOD") or "PUT"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = "application/json"
local i = 0
function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = report.done
