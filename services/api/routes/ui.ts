// The web dashboard at /ui: static ES modules and CSS from services/api/ui, and uPlot (the
// charting library) from node_modules, served by the API itself so that no CDN and no build step
// is involved. Every file is read once at registration into a fixed map, so no request path ever
// reaches the file system. The API's strict CSP (default-src 'none') is relaxed here only, and
// only as far as the dashboard needs: its own scripts, styles and API calls, blob: images for
// charts fetched with the Bearer header, and nothing inline. Sign-in checks a key with
// POST /ui/session, which answers 200 for a wrong key too: a 401 would be logged by the browser as
// a console error, and a wrong key typed into a form is an answer, not a failure.
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import type { FastifyInstance } from "fastify";
import type { ApiKeyResolver } from "../../common/auth.ts";
import { AppError } from "../../common/errors.ts";
import { bearerKey, unknownKeyError } from "../plugins/auth.ts";
import { applyRateLimit } from "../plugins/rate-limit.ts";

export const UI_CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const UI_ROOT = path.join(import.meta.dirname, "../ui");
const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

interface Asset {
  type: string;
  body: Buffer;
}

async function folderAssets(root: string, prefix: string): Promise<Map<string, Asset>> {
  const assets = new Map<string, Asset>();
  for (const entry of await fs.readdir(root, { withFileTypes: true, recursive: true })) {
    const type = CONTENT_TYPES[path.extname(entry.name)];
    if (!entry.isFile() || !type) continue;
    const full = path.join(entry.parentPath, entry.name);
    assets.set(prefix + path.relative(root, full).split(path.sep).join("/"), { type, body: await fs.readFile(full) });
  }
  return assets;
}

/** uPlot's ES module and stylesheet, from the installed package (package.json pins the version). */
async function vendorAssets(): Promise<Map<string, Asset>> {
  const dist = path.dirname(createRequire(import.meta.url).resolve("uplot"));
  return new Map([
    ["vendor/uPlot.esm.js", { type: CONTENT_TYPES[".js"], body: await fs.readFile(path.join(dist, "uPlot.esm.js")) }],
    ["vendor/uPlot.min.css", { type: CONTENT_TYPES[".css"], body: await fs.readFile(path.join(dist, "uPlot.min.css")) }],
  ]);
}

const sessionSchema = {
  hide: true,
  response: {
    200: {
      type: "object",
      required: ["valid"],
      properties: {
        valid: { type: "boolean" },
        error: { type: "object", required: ["code", "message"], properties: { code: { type: "string" }, message: { type: "string" } } },
      },
    },
  },
} as const;

export interface UiRoutesOptions {
  resolver: ApiKeyResolver;
}

export async function uiRoutes(app: FastifyInstance, { resolver }: UiRoutesOptions): Promise<void> {
  const assets = new Map([...(await folderAssets(UI_ROOT, "")), ...(await vendorAssets())]);
  // Runs after the app's own onRequest hook (this plugin's scope is a child), so it replaces the policy.
  app.addHook("onRequest", (_request, reply, done) => {
    reply.header("content-security-policy", UI_CONTENT_SECURITY_POLICY);
    done();
  });

  // The same check as api-key-auth, counted against the key's rate limit as a /v1 request is.
  app.post("/ui/session", { schema: sessionSchema }, async (request, reply) => {
    const key = bearerKey(request.headers.authorization);
    if (key instanceof AppError) return { valid: false, error: { code: key.code, message: key.message } };
    const { principal, verdict } = await resolver.admit(key);
    if (!principal) {
      const error = unknownKeyError();
      return { valid: false, error: { code: error.code, message: error.message } };
    }
    const limited = applyRateLimit(reply, verdict);
    if (limited) throw limited;
    return { valid: true };
  });
  app.get("/ui", { schema: { hide: true } }, async (_request, reply) => reply.redirect("/ui/", 301));
  app.get("/ui/*", { schema: { hide: true } }, async (request, reply) => {
    const name = (request.params as { "*": string })["*"] || "index.html";
    const asset = assets.get(name);
    if (!asset) throw new AppError(404, "not_found", `no dashboard file ${name}`);
    // Revalidated on each load, so a deploy never mixes old and new modules.
    return reply.type(asset.type).header("cache-control", "no-cache").send(asset.body);
  });
}
