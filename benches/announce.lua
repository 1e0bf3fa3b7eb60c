-- wrk script: HTTP announces over keep-alive connections, spread over 1000 torrents and many peers,
-- info_hash and peer_id as raw bytes, percent-encoded.
local function hex20(n)
  local s = string.format("%040x", n)
  return (s:gsub("..", function(h) return "%" .. h end))
end

local counter = 0
request = function()
  counter = counter + 1
  local torrent = counter % 1000
  local peer = counter % 50000
  local left = (counter % 3 == 0) and 0 or 1000
  local path = "/announce?info_hash=" .. hex20(torrent * 7919 + 1) .. "&peer_id=" .. hex20(peer + 100000)
    .. "&port=" .. (1024 + peer % 60000) .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50"
  return wrk.format("GET", path)
end
