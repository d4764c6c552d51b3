// API keys: random secrets shown once, stored only as sha256, each bound to a tenant.
// Used by the API (authentication, bootstrap key) and by the keys CLI.
import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { CANONICAL_UUID, type PrismaClient } from "./db.ts";
import { withRedisTimeout } from "./queue.ts";
import type { LimitVerdict, RedisRateLimiter } from "./rate-limiter.ts";

export const DEFAULT_TENANT = "default";
const KEY_PREFIX = "lora_";
/** Characters of a key kept in clear (`prefix` column) so a listing can name it. */
const SHOWN_CHARACTERS = 12;

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

export function generateApiKey(): string {
  return KEY_PREFIX + randomBytes(32).toString("base64url");
}

export interface ApiKeyInfo {
  id: string;
  tenant: string;
  name: string;
  prefix: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

async function tenantIdOf(prisma: PrismaClient, tenantName: string): Promise<string> {
  const tenant = await prisma.tenant.upsert({ where: { name: tenantName }, create: { name: tenantName }, update: {} });
  return tenant.id;
}

/** Creates a key for the tenant (created if new); the returned key is never stored. */
export async function createApiKey(prisma: PrismaClient, tenantName: string, name: string): Promise<{ key: string; info: ApiKeyInfo }> {
  const key = generateApiKey();
  const tenantId = await tenantIdOf(prisma, tenantName);
  const row = await prisma.apiKey.create({
    data: { tenantId, name, prefix: key.slice(0, SHOWN_CHARACTERS), keyHash: hashApiKey(key) },
  });
  return { key, info: { ...row, tenant: tenantName } };
}

/**
 * Makes the operator-chosen key from BOOTSTRAP_API_KEY valid for the default tenant.
 * Idempotent; a bootstrap key that was revoked stays revoked.
 */
export async function ensureBootstrapKey(prisma: PrismaClient, key: string): Promise<void> {
  const tenantId = await tenantIdOf(prisma, DEFAULT_TENANT);
  await prisma.apiKey.upsert({
    where: { keyHash: hashApiKey(key) },
    create: { tenantId, name: "bootstrap", prefix: key.slice(0, Math.min(SHOWN_CHARACTERS, Math.floor(key.length / 3))), keyHash: hashApiKey(key) },
    update: {},
  });
}

export async function listApiKeys(prisma: PrismaClient, tenantName?: string): Promise<ApiKeyInfo[]> {
  const rows = await prisma.apiKey.findMany({
    where: tenantName ? { tenant: { name: tenantName } } : {},
    include: { tenant: { select: { name: true } } },
    orderBy: [{ createdAt: "asc" }, { id: "asc" }],
  });
  return rows.map(({ tenant, keyHash: _hash, tenantId: _tenantId, ...row }) => ({ ...row, tenant: tenant.name }));
}

/** Revokes by id or by the shown prefix; returns how many keys were revoked. */
export async function revokeApiKey(prisma: PrismaClient, idOrPrefix: string): Promise<number> {
  const isUuid = CANONICAL_UUID.test(idOrPrefix);
  const result = await prisma.apiKey.updateMany({
    where: { revokedAt: null, ...(isUuid ? { id: idOrPrefix } : { prefix: idOrPrefix }) },
    data: { revokedAt: new Date() },
  });
  return result.count;
}

export interface Principal {
  keyId: string;
  tenantId: string;
}

/** A cache of resolved keys in Redis, shared by every API replica; entries carry their expiry. */
export interface SharedKeyCache {
  redis: Redis;
  /** Namespaces the entries (the queue prefix). */
  prefix: string;
  /** Counts each request by the key's sha256 and reads the shared entry in the same round trip. */
  limiter?: RedisRateLimiter;
}

const SHARED_CACHE_TIMEOUT_MS = 250;

interface CachedKey {
  principal: Principal;
  expiresAt: number;
  keyHash: string;
}

/** What `admit` found: the key's principal (none: unknown or revoked) and its rate-limit verdict. */
export interface Admission {
  principal: Principal | undefined;
  /** Undefined without a limiter, or while Redis cannot count (fail open). */
  verdict: LimitVerdict | undefined;
}

/**
 * Resolves bearer keys to tenants with a short-lived cache, so a busy client costs one
 * query per TTL rather than one per request. A revocation takes effect within the TTL.
 * The local cache is keyed by the key itself and remembers its sha256, so a hit costs a map
 * lookup. `admit` spends exactly one Redis round trip per request: the limiter's script counts
 * the request and, when this process has not got the key, returns the shared entry; Postgres
 * is asked only when Redis has no entry either (the entry is then written back, off the
 * request path). A Redis that is down or slow is skipped.
 */
export class ApiKeyResolver {
  private readonly cache = new Map<string, CachedKey>();
  private readonly lastTouched = new Map<string, number>();
  private readonly lookups = new Map<string, Promise<Principal | undefined>>();

  constructor(
    private readonly prisma: PrismaClient,
    private readonly ttlMs: number,
    private readonly touchEveryMs = 60_000,
    private readonly shared?: SharedKeyCache,
  ) {}

  /** The principal of a key resolved within the TTL, without touching the database. */
  cached(key: string): Principal | undefined {
    const entry = this.cache.get(key);
    return entry && entry.expiresAt > Date.now() ? entry.principal : undefined;
  }

  /** Authenticates and counts one request: one Redis round trip, Postgres only on a double miss. */
  async admit(key: string): Promise<Admission> {
    const now = Date.now();
    const local = this.cache.get(key);
    const keyHash = local?.keyHash ?? hashApiKey(key);
    const fresh = local && local.expiresAt > now ? local.principal : undefined;
    const sharedKey = !fresh && this.shared && this.ttlMs > 0 ? this.sharedKeyOf(keyHash) : undefined;
    const counted = this.shared?.limiter ? await this.shared.limiter.hit(keyHash, sharedKey) : undefined;
    const verdict = counted ? { allowed: counted.allowed, limit: counted.limit, remaining: counted.remaining, resetMs: counted.resetMs } : undefined;
    if (fresh) return { principal: fresh, verdict };
    const entry = counted?.cached ? (JSON.parse(counted.cached) as Principal & { expiresAt: number }) : undefined;
    if (entry && entry.expiresAt > now) {
      const principal = { keyId: entry.keyId, tenantId: entry.tenantId };
      this.cache.set(key, { principal, expiresAt: entry.expiresAt, keyHash });
      return { principal, verdict };
    }
    return { principal: await this.lookUpOnce(key, keyHash), verdict };
  }

  /** Concurrent requests with a key not yet cached share one database lookup. */
  resolve(key: string): Promise<Principal | undefined> {
    const hit = this.cached(key);
    if (hit) return Promise.resolve(hit);
    return this.lookUpOnce(key, this.cache.get(key)?.keyHash ?? hashApiKey(key));
  }

  private sharedKeyOf(keyHash: string): string {
    return `${this.shared!.prefix}:apikey:${keyHash}`;
  }

  private lookUpOnce(key: string, keyHash: string): Promise<Principal | undefined> {
    let lookup = this.lookups.get(key);
    if (!lookup) {
      lookup = this.lookUp(key, keyHash).finally(() => this.lookups.delete(key));
      this.lookups.set(key, lookup);
    }
    return lookup;
  }

  private async lookUp(key: string, keyHash: string): Promise<Principal | undefined> {
    const now = Date.now();
    const row = await this.prisma.apiKey.findUnique({ where: { keyHash }, select: { id: true, tenantId: true, revokedAt: true } });
    if (!row || row.revokedAt) {
      this.cache.delete(key);
      return undefined;
    }
    const principal = { keyId: row.id, tenantId: row.tenantId };
    const expiresAt = now + this.ttlMs;
    if (this.ttlMs > 0) this.cache.set(key, { principal, expiresAt, keyHash });
    if (this.shared && this.ttlMs > 0) {
      const entry = JSON.stringify({ ...principal, expiresAt });
      withRedisTimeout(this.shared.redis.set(this.sharedKeyOf(keyHash), entry, "PX", this.ttlMs), SHARED_CACHE_TIMEOUT_MS, "the API key cache").catch(() => {});
    }
    this.touch(row.id, now);
    return principal;
  }

  // lastUsedAt is advisory: written at most once a minute per key, off the request path.
  private touch(keyId: string, now: number): void {
    if ((this.lastTouched.get(keyId) ?? 0) + this.touchEveryMs > now) return;
    this.lastTouched.set(keyId, now);
    this.prisma.apiKey.update({ where: { id: keyId }, data: { lastUsedAt: new Date(now) } }).catch(() => {});
  }
}
