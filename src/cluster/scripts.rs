//! The directory's Lua scripts: each one step that must not interleave with another node's.
//!
//! Entries of `{p}:where` are `"<node>:<conn>"`; a node's users are the members of
//! `{p}:node-users:<node>` whose entry starts with `"<node>:"` (a member whose entry names
//! another node is stale: that session has been released and the user claimed elsewhere).

use std::sync::LazyLock;

use redis::Script;

/// Removes, for node `node`, every user of the set `users` whose `where` entry is still that
/// node's, then the set itself.
const PURGE: &str = r#"
local function purge(users, where, online, node)
  local prefix = node .. ':'
  for _, user in ipairs(redis.call('SMEMBERS', users)) do
    local at = redis.call('HGET', where, user)
    if at and string.sub(at, 1, #prefix) == prefix then
      redis.call('HDEL', where, user)
      redis.call('ZREM', online, user)
    end
  end
  redis.call('DEL', users)
end
"#;

/// KEYS: lease (this node), where, order, online, node-users (this node).
/// ARGV: user, "<node>:<conn>".
/// Returns -2 if this node's lease is gone (fencing: a node the cluster may have reaped must
/// not take users), -1 if the user is someone else's, 0 if it is this session's already (the
/// claim is repeated after a lost answer), else the user's login order.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then return 0 end
  return -1
end
local order = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[4], order, ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return order
"#,
    )
});

/// KEYS: where, online, node-users (this node). ARGV: user, "<node>:<conn>".
/// Returns 1 if the claim was that session's and is gone, 0 if it was not (a newer session's
/// claim is left alone).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
"#,
    )
});

/// KEYS: online, where. Returns `user, "<node>:<conn>"` pairs flattened, in login order, read
/// at one instant.
pub(crate) static ONLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for _, user in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local at = redis.call('HGET', KEYS[2], user)
  if at then
    table.insert(out, user)
    table.insert(out, at)
  end
end
return out
"#,
    )
});

/// KEYS: lease (node n), node-users (n), where, online, inbox (n), nodes.
/// ARGV: n, mode: `reap` (only if n's lease is gone) or `leave` (n is this node, leaving).
/// Returns 0 if n is alive (its lease is back), 1 if it was a member and is now gone, 2 if it
/// was no longer a member (someone else reaped it).
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PURGE}
if ARGV[2] == 'leave' then
  redis.call('DEL', KEYS[1])
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
purge(KEYS[2], KEYS[3], KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
if redis.call('SREM', KEYS[6], ARGV[1]) == 1 then return 1 end
return 2
"#
    ))
});

/// KEYS: node-users (this node), where, online, node-seq, lease (this node), nodes, inbox
/// (this node). ARGV: this node, lease in ms, the inbox's time to live in ms.
/// (Re)registers this node: drops whatever of its users the directory still holds (their
/// sessions ended when the lease was lost), makes sure `node-seq` never hands its id out again
/// (Redis may have lost its data), then takes the lease, joins `nodes`, and makes its inbox if
/// there is none (an empty stream: other nodes append with `NOMKSTREAM`, so only its owner
/// ever makes an inbox, and a reaped node's is never made again by a late message).
pub(crate) static REGISTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PURGE}
purge(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[4], ARGV[1])
end
redis.call('SET', KEYS[5], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[6], ARGV[1])
if redis.call('EXISTS', KEYS[7]) == 0 then
  redis.call('XADD', KEYS[7], 'MAXLEN', 0, '*', 'made', '1')
end
redis.call('PEXPIRE', KEYS[7], ARGV[3])
return 1
"#
    ))
});

/// KEYS: where. ARGV: the inboxes' names without the node id, the entry's field for the
/// message and the one for the session, then the `/to`s' users, then their messages
/// (`codec::deliver_to`) in the same order.
/// Looks each user up and appends the message, with the session found, to that session's
/// node's inbox (if it has one: a reaped node's is gone); returns per `/to` the
/// `"<node>:<conn>"` it went to, or nil if it went nowhere. Kept to one lookup for them all
/// and an append per `/to`: every call and every string made in Lua costs Redis about as much
/// as a command does.
/// The lookup and the append are one step, so no login or logout falls between them. The
/// inboxes' names are made here from the entries found, so they cannot be declared as KEYS:
/// this needs one Redis, not a Redis Cluster, as the rest of the directory does.
/// Run with `EVAL`, not `EVALSHA`, as it runs inside a `MULTI`: a script Redis had forgotten
/// would fail there alone while the rest of the transaction went through.
pub(crate) const DELIVER_TO: &str = r#"
local n = (#ARGV - 3) / 2
local found = redis.call('HMGET', KEYS[1], unpack(ARGV, 4, 3 + n))
local routed = {}
for i = 1, n do
  local at = found[i]
  local sep = at and string.find(at, ':', 1, true)
  local added = false
  if sep then
    local inbox = ARGV[1] .. string.sub(at, 1, sep - 1)
    added = redis.call('XADD', inbox, 'NOMKSTREAM', '*', ARGV[2], ARGV[3 + n + i], ARGV[3], at)
  end
  routed[i] = added and at
end
return routed
"#;
