// A private PostgreSQL server on a free port, for tests that stop, restart or cut off the
// database: the machine's shared server, which every other test file uses, is never touched.
// It runs the installed server's own binaries as the `postgres` user (the server refuses root).
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort } from "./redis-server.ts";

const repoRoot = path.resolve(import.meta.dirname, "../..");

function serverBinaries(): string {
  const root = "/usr/lib/postgresql";
  const newest = fs
    .readdirSync(root)
    .filter((name) => /^\d+$/.test(name))
    .sort((a, b) => Number(b) - Number(a))[0];
  if (!newest) throw new Error(`no PostgreSQL server under ${root}`);
  return path.join(root, newest, "bin");
}

/** Runs a command as the postgres user when this process is root, as itself otherwise. */
function asServerUser(command: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", command, ...args]] : [command, args];
}

export class PrivatePostgres {
  private server: ChildProcess | undefined;
  private output = "";

  private constructor(
    readonly port: number,
    private readonly dataDir: string,
  ) {}

  /** A fresh cluster with a migrated `lora` database, started. */
  static async create(): Promise<PrivatePostgres> {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "lora-private-pg-"));
    if (process.getuid?.() === 0) execFileSync("chown", ["postgres:postgres", dataDir]);
    const [initdb, initdbArgs] = asServerUser(path.join(serverBinaries(), "initdb"), ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
    execFileSync(initdb, initdbArgs, { stdio: "pipe" });
    const postgres = new PrivatePostgres(await freePort(), dataDir);
    await postgres.start();
    execFileSync(path.join(serverBinaries(), "createdb"), ["-h", "127.0.0.1", "-p", String(postgres.port), "-U", "postgres", "lora"]);
    execFileSync("bash", [path.join(repoRoot, "scripts/prisma.sh"), "migrate", "deploy"], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: postgres.url },
      stdio: "pipe",
    });
    return postgres;
  }

  get url(): string {
    return `postgresql://postgres@127.0.0.1:${this.port}/lora`;
  }

  /** What the server printed, for assertion messages. */
  get log(): string {
    return this.output;
  }

  async start(): Promise<void> {
    const [command, args] = asServerUser(path.join(serverBinaries(), "postgres"), [
      "-D", this.dataDir,
      "-p", String(this.port),
      "-k", this.dataDir,
      "-c", "listen_addresses=127.0.0.1",
      "-c", "fsync=off",
    ]);
    const startedAt = this.output.length;
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.server = child;
    const collect = (chunk: Buffer) => (this.output += chunk.toString());
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    await new Promise<void>((resolve, reject) => {
      const onData = () => {
        if (this.output.slice(startedAt).includes("ready to accept connections")) {
          child.stderr!.off("data", onData);
          child.off("exit", onExit);
          resolve();
        }
      };
      const onExit = (code: number | null) => reject(new Error(`postgres exited with ${code} before it was ready:\n${this.output}`));
      child.stderr!.on("data", onData);
      child.once("exit", onExit);
      onData();
    });
  }

  /** As `pg_ctl stop -m fast` does: every session is terminated and the server exits. */
  async stop(): Promise<void> {
    const child = this.server;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    // The server itself, not runuser in front of it: its pid is the first line of postmaster.pid.
    const serverPid = Number(fs.readFileSync(path.join(this.dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
    const exited = once(child, "exit");
    process.kill(serverPid, "SIGINT");
    await exited;
  }

  /** Stops the server and deletes its files. */
  async destroy(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}
