-- wrk script: POST /v1/checkout of one unit of one SKU, each request with its own Idempotency-Key.
-- Usage: TOKEN=<customer access token> SKU=HOT-1 wrk -t2 -c64 -d10s --latency -s checkout.lua URL
local token = os.getenv("TOKEN")
local sku = os.getenv("SKU") or "HOT-1"
local body = '{"payment_token":"tok_visa","items":[{"sku":"' .. sku .. '","qty":1}]}'
local threads = 0
local counter = 0
local prefix

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  prefix = string.format("wrk-%d-%d-%d", os.time(), thread_id, math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/checkout", {
    ["content-type"] = "application/json",
    ["authorization"] = "Bearer " .. token,
    ["idempotency-key"] = prefix .. "-" .. counter,
  }, body)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("non-2xx responses: %d\n", non2xx))
end
