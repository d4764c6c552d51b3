// Prisma CLI configuration: the WebAssembly schema engine with the pg driver adapter,
// so `prisma migrate deploy` needs no native engine download (see README, "Migrations").
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";

const connectionString = process.env.DATABASE_URL ?? "postgresql://postgres@127.0.0.1:5432/lora";

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  experimental: { adapter: true },
  engine: "js",
  adapter: async () => new PrismaPg({ connectionString }),
});
