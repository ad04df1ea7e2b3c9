-- wrk script: POST /users/ (create-user) with a body the gateway validates and the bench policy
-- allows; prints one JSON line like ../shared/bench/wrk-auth.lua.
--   wrk -t2 -c50 -d15s -s tests/bench/wrk-create.lua https://127.0.0.1:28445/users/ -- TOKEN
function init(args)
  local token = args[1]
  if token == nil or token == "" then error("wrk-create.lua: pass the token after --") end
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Version"] = "2021-07-28"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"companyId":"ve9EPM428h8vShlRW1KT","firstName":"Ada","lastName":"Lovelace",' ..
    '"email":"ada@example.com","password":"Str0ng!Passw0rd","type":"account","role":"user",' ..
    '"locationIds":["C2QujeCh8ZnC7al2InWR"],"scopes":["contacts.write"],' ..
    '"scopesAssignedToOnly":["contacts.write"]}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect, e.read, e.write, e.status, e.timeout))
end
