-- GET paths drawn from PATHS_FILE (one per line) with Zipf-distributed ranks (exponent ZIPF_S);
-- a share WRITE_PCT of requests are PATCHes of WRITE_PATH with a body from WRITE_BODY.
package.path = package.path .. ";" .. os.getenv("BENCH_LUA") .. "/?.lua"
local report = require("report")
local token = os.getenv("TOKEN")
local paths = {}
for line in io.lines(os.getenv("PATHS_FILE")) do paths[#paths + 1] = line end
local s = tonumber(os.getenv("ZIPF_S") or "1.1")
local write_pct = tonumber(os.getenv("WRITE_PCT") or "0")
local write_path = os.getenv("WRITE_PATH")
local write_method = os.getenv("WRITE_METHOD") or "PATCH"
local write_bodies = {}
if os.getenv("WRITE_BODIES") then
  for line in io.lines(os.getenv("WRITE_BODIES")) do write_bodies[#write_bodies + 1] = line end
end
-- cumulative Zipf weights over the ranks
local cdf, total = {}, 0
for i = 1, #paths do total = total + 1 / (i ^ s); cdf[i] = total end
local function draw()
  local r = math.random() * total
  local lo, hi = 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return paths[lo]
end
local headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
function init(args) math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000) end
function request()
  if write_pct > 0 and math.random() * 100 < write_pct then
    return wrk.format(write_method, write_path, headers, write_bodies[math.random(#write_bodies)])
  end
  return wrk.format("GET", draw(), headers)
end
done = report.done
