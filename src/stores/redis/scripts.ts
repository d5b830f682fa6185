/**
 * One Lua script per transition. Each touches exactly one key (KEYS[1], the record hash), so
 * it runs atomically on the node that owns the key's slot, Redis Cluster included. The one
 * exception is the operators' SCAN_RECORDS, which declares no key and runs on each master.
 *
 * The transitions that settle a record (complete, release, delete) also `PUBLISH` its id on
 * the settle channel (ARGV: channel, id), from inside the script and only when the record
 * changed, for the waiters of `waitForSettle`. A channel is not a key, so this keeps to one
 * key per script; Redis Cluster broadcasts a PUBLISH to every node, so a subscriber on any
 * node hears it.
 *
 * Time is the server's: `TIME` inside the script. Redis ≥ 5 replicates a script's effects,
 * not the script, so reading the clock before writing is allowed (and replicas agree).
 *
 * The record hash: state, fp, token, created, exp, outcome (exact bytes), ns, scope, key.
 * Every write also sets the key's own expiry to `exp` (PEXPIREAT), so Redis drops lapsed
 * records by itself. The scripts still compare `exp` with `TIME`: Redis keeps a key through
 * the millisecond equal to its expiry, while a record lapses at `exp <= now` (answerFromExisting).
 */
import { createHash } from 'node:crypto';

/** A script's source and the SHA-1 that EVALSHA names it by. */
export interface Script {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Whole milliseconds as digits: a Lua number would be formatted by the server, possibly as 1.7e+12.
local function int(n)
  return string.format('%.0f', n)
end
-- The live record as {state, fp, created, exp, outcome, ns, scope, key}, or nil when absent or lapsed.
-- Missing optional fields are false, which the client receives as null.
local function live(key, now)
  local r = redis.call('HMGET', key, 'state', 'fp', 'created', 'exp', 'outcome', 'ns', 'scope', 'key')
  if not r[1] or tonumber(r[4]) <= now then return nil end
  r[3] = tonumber(r[3])
  r[4] = tonumber(r[4])
  return r
end
-- Whether token holds the live in-progress claim: the fence for complete, release, extend.
local function held(key, token, now)
  local r = redis.call('HMGET', key, 'state', 'token', 'exp')
  return r[1] == 'in_progress' and r[2] == token and tonumber(r[3]) > now
end
-- Tells the subscribers of channel ARGV[n] that the record settled; the id is ARGV[n + 1].
local function settled(n)
  redis.call('PUBLISH', ARGV[n], ARGV[n + 1])
end
local key = KEYS[1]
local now = now_ms()
`;

function script(name: string, body: string): Script {
  const source = PRELUDE + body;
  return { name, source, sha: createHash('sha1').update(source).digest('hex') };
}

/**
 * ARGV: fingerprint, token, leaseMs, then field/value pairs of the meta present (ns, scope, key).
 * Returns {'acquired', expiresAt} or {status, ...live record}. A different fingerprint is a
 * mismatch whatever the state, so it is checked before in-progress (DESIGN §3.4). Lua
 * compares interned strings by identity, so the fingerprint check leaks no timing.
 */
export const CLAIM = script('claim', `
local r = live(key, now)
if r then
  local status
  if r[2] ~= ARGV[1] then status = 'mismatch'
  elseif r[1] == 'completed' then status = 'completed'
  else status = 'in_progress' end
  return {status, unpack(r)}
end
local exp = now + tonumber(ARGV[3])
-- A lapsed record may still be here (same millisecond as its expiry): start from nothing.
redis.call('DEL', key)
redis.call('HSET', key, 'state', 'in_progress', 'fp', ARGV[1], 'token', ARGV[2], 'created', int(now), 'exp', int(exp), unpack(ARGV, 4))
redis.call('PEXPIREAT', key, int(exp))
return {'acquired', exp}
`);

/** ARGV: token, outcome bytes, retentionMs, settle channel, id. Returns 1 (ok) or 0 (lost). */
export const COMPLETE = script('complete', `
if not held(key, ARGV[1], now) then return 0 end
local exp = int(now + tonumber(ARGV[3]))
redis.call('HSET', key, 'state', 'completed', 'outcome', ARGV[2], 'exp', exp)
redis.call('HDEL', key, 'token')
redis.call('PEXPIREAT', key, exp)
settled(4)
return 1
`);

/** ARGV: token, settle channel, id. Deletes the record. Returns 1 (ok) or 0 (lost). */
export const RELEASE = script('release', `
if not held(key, ARGV[1], now) then return 0 end
redis.call('DEL', key)
settled(2)
return 1
`);

/** ARGV: settle channel, id. Deletes the record whatever its state. Returns 1 (deleted) or 0 (absent). */
export const DELETE = script('delete', `
local removed = redis.call('DEL', key)
if removed == 1 then settled(1) end
return removed
`);

/** ARGV: token, leaseMs. Returns 1 (ok) or 0 (lost). */
export const EXTEND = script('extend', `
if not held(key, ARGV[1], now) then return 0 end
local exp = int(now + tonumber(ARGV[2]))
redis.call('HSET', key, 'exp', exp)
redis.call('PEXPIREAT', key, exp)
return 1
`);

/** No ARGV. Returns the live record as {state, ...} or null; the lapse check uses the server clock. */
export const GET = script('get', `
return live(key, now) or false
`);

/** ARGV: settle channel, id. Deletes a live in-progress record only. Returns 1 (released) or 0. */
export const FORCE_RELEASE = script('forceRelease', `
local r = live(key, now)
if not r or r[1] ~= 'in_progress' then return 0 end
redis.call('DEL', key)
settled(1)
return 1
`);

/**
 * Operators only: one SCAN step over the records of this node. ARGV: cursor, MATCH pattern,
 * COUNT. Returns {next cursor, now, {key name, state, created, exp, ns, scope, key}...},
 * without outcomes, so a step stays small. Declares no key: on a Cluster the store runs it on each master.
 */
export const SCAN_RECORDS = script('scanRecords', `
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local rows = {}
for _, name in ipairs(step[2]) do
  local r = redis.call('HMGET', name, 'state', 'created', 'exp', 'ns', 'scope', 'key')
  if r[1] then
    table.insert(rows, {name, r[1], r[2], r[3], r[4], r[5], r[6]})
  end
end
return {step[1], int(now), rows}
`);
