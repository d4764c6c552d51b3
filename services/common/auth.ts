// API keys: random secrets shown once, stored only as sha256, each bound to a tenant.
// Used by the API (authentication, bootstrap key) and by the keys CLI.
import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { CANONICAL_UUID, type PrismaClient } from "./db.ts";
import { withRedisTimeout } from "./queue.ts";

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
}

const SHARED_CACHE_TIMEOUT_MS = 250;

/**
 * Resolves bearer keys to tenants with a short-lived cache, so a busy client costs one
 * query per TTL rather than one per request. A revocation takes effect within the TTL.
 * The local cache is keyed by the key itself: a hit costs a map lookup, not a sha256. With a
 * shared cache, a replica that has not seen a key asks Redis (by the key's sha256) before
 * Postgres; a Redis that is down or slow is skipped.
 */
export class ApiKeyResolver {
  private readonly cache = new Map<string, { principal: Principal; expiresAt: number }>();
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

  /** Concurrent requests with a key not yet cached share one database lookup. */
  resolve(key: string): Promise<Principal | undefined> {
    const hit = this.cached(key);
    if (hit) return Promise.resolve(hit);
    let lookup = this.lookups.get(key);
    if (!lookup) {
      lookup = this.lookUp(key).finally(() => this.lookups.delete(key));
      this.lookups.set(key, lookup);
    }
    return lookup;
  }

  private async lookUp(key: string): Promise<Principal | undefined> {
    const now = Date.now();
    const keyHash = hashApiKey(key);
    const sharedKey = this.shared && this.ttlMs > 0 ? `${this.shared.prefix}:apikey:${keyHash}` : undefined;
    if (sharedKey) {
      const entry = await this.sharedCall(() => this.shared!.redis.get(sharedKey));
      const parsed = entry ? (JSON.parse(entry) as Principal & { expiresAt: number }) : undefined;
      if (parsed && parsed.expiresAt > now) {
        const principal = { keyId: parsed.keyId, tenantId: parsed.tenantId };
        this.cache.set(key, { principal, expiresAt: parsed.expiresAt });
        return principal;
      }
    }
    const row = await this.prisma.apiKey.findUnique({ where: { keyHash }, select: { id: true, tenantId: true, revokedAt: true } });
    if (!row || row.revokedAt) {
      this.cache.delete(key);
      return undefined;
    }
    const principal = { keyId: row.id, tenantId: row.tenantId };
    const expiresAt = now + this.ttlMs;
    if (this.ttlMs > 0) this.cache.set(key, { principal, expiresAt });
    if (sharedKey) void this.sharedCall(() => this.shared!.redis.set(sharedKey, JSON.stringify({ ...principal, expiresAt }), "PX", this.ttlMs));
    this.touch(row.id, now);
    return principal;
  }

  private sharedCall<T>(call: () => Promise<T>): Promise<T | undefined> {
    return withRedisTimeout(call(), SHARED_CACHE_TIMEOUT_MS, "the API key cache").catch(() => undefined);
  }

  // lastUsedAt is advisory: written at most once a minute per key, off the request path.
  private touch(keyId: string, now: number): void {
    if ((this.lastTouched.get(keyId) ?? 0) + this.touchEveryMs > now) return;
    this.lastTouched.set(keyId, now);
    this.prisma.apiKey.update({ where: { id: keyId }, data: { lastUsedAt: new Date(now) } }).catch(() => {});
  }
}
