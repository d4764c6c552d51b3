// API key administration against DATABASE_URL:
//   keys create --tenant <name> [--name <label>]   prints the new key once; only its hash is stored
//   keys list [--tenant <name>]                    id, tenant, name, prefix, created, last used, revoked
//   keys revoke <id | prefix>
import { parseArgs } from "node:util";
import { createApiKey, listApiKeys, revokeApiKey } from "../common/auth.ts";
import { loadConfigOrExit } from "../common/config.ts";
import { createPrisma, OutageLog } from "../common/db.ts";
import { createLogger } from "../common/logger.ts";

const USAGE = "usage: keys create --tenant <name> [--name <label>] | keys list [--tenant <name>] | keys revoke <id|prefix>";

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { tenant: { type: "string" }, name: { type: "string" }, json: { type: "boolean" } },
  });
  const [command, target] = positionals;
  const config = loadConfigOrExit();
  const prisma = createPrisma(config.databaseUrl, new OutageLog(createLogger(config.logLevel, "keys")));
  try {
    switch (command) {
      case "create": {
        if (!values.tenant) break;
        const { key, info } = await createApiKey(prisma, values.tenant, values.name ?? "cli");
        process.stdout.write(values.json ? `${JSON.stringify({ key, ...info })}\n` : `${key}\n`);
        process.stderr.write(`created key ${info.id} (${info.prefix}…) for tenant ${info.tenant}; it is shown only now\n`);
        return 0;
      }
      case "list": {
        const keys = await listApiKeys(prisma, values.tenant);
        if (values.json) process.stdout.write(`${JSON.stringify(keys)}\n`);
        else
          for (const key of keys) {
            const state = key.revokedAt ? `revoked ${key.revokedAt.toISOString()}` : "active";
            process.stdout.write(`${key.id}\t${key.tenant}\t${key.name}\t${key.prefix}…\t${key.createdAt.toISOString()}\t${key.lastUsedAt?.toISOString() ?? "never used"}\t${state}\n`);
          }
        return 0;
      }
      case "revoke": {
        if (!target) break;
        const count = await revokeApiKey(prisma, target);
        process.stderr.write(count > 0 ? `revoked ${count} key(s)\n` : `no active key matches ${target}\n`);
        return count > 0 ? 0 : 1;
      }
    }
    process.stderr.write(`${USAGE}\n`);
    return 2;
  } finally {
    await prisma.$disconnect();
  }
}

process.exitCode = await main(process.argv.slice(2));
