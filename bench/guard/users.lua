-- A new account for every request (X-User, believed from the trusted loopback proxy): fills
-- the guard's book to measure its memory per account.
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, { ["X-User"] = "agent-" .. counter })
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d\n", summary.requests))
end
