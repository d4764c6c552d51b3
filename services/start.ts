// `npm start`: the API and one worker together, as two processes sharing this terminal.
// A signal goes to both; if either one exits, the other is stopped and start exits too.
// The children run in their own process group so that Ctrl-C reaches them once, through
// this process, and a worker can finish its graceful hand-back instead of being hit twice.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";

const here = import.meta.dirname;
const children = new Map<string, ChildProcess>();
let stopping = false;

function launch(name: string, entry: string): void {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(here, entry)], { stdio: "inherit", env: process.env, detached: true });
  children.set(name, child);
  child.on("exit", (code, signal) => {
    children.delete(name);
    if (!stopping) {
      process.stderr.write(`${name} exited (${signal ?? code}); stopping the rest\n`);
      stop("SIGTERM", code ?? 1);
    } else if (children.size === 0) {
      process.exit(process.exitCode ?? 0);
    }
  });
}

function stop(signal: NodeJS.Signals, exitCode = 0): void {
  if (stopping) return;
  stopping = true;
  process.exitCode = exitCode;
  if (children.size === 0) process.exit(exitCode);
  for (const child of children.values()) child.kill(signal);
}

process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGTERM"));
launch("api", "api/server.ts");
launch("worker", "worker/main.ts");
