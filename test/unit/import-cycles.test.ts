// The rooms import downwards (api and worker → trainer → common), and no file imports one that
// imports it back: a cycle makes load order decide what a module sees. Type-only imports count
// too, as they do for madge (`npx madge --circular --extensions ts --exclude generated/ services`).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

const servicesDir = path.join(import.meta.dirname, "..", "..", "services");
const RELATIVE_IMPORT = /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+\.ts)["']/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === "generated" || entry.name === "node_modules" ? [] : sourceFiles(full);
    return entry.name.endsWith(".ts") ? [full] : [];
  });
}

/** Every import cycle, each as the files along it, relative to services/. */
function importCycles(): string[][] {
  const files = sourceFiles(servicesDir);
  const imports = new Map(
    files.map((file) => [file, [...readFileSync(file, "utf8").matchAll(RELATIVE_IMPORT)].map((match) => path.resolve(path.dirname(file), match[1]))]),
  );
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, "open");
    stack.push(file);
    for (const next of imports.get(file) ?? []) {
      if (state.get(next) === "open") cycles.push(stack.slice(stack.indexOf(next)).map((f) => path.relative(servicesDir, f)));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, "done");
  };
  for (const file of files) if (!state.has(file)) visit(file);
  return cycles;
}

test("the import scanner reads the imports of a file", () => {
  // Guards the regular expression: if it missed imports, the cycle test below would pass vacuously.
  const appImports = [...readFileSync(path.join(servicesDir, "api", "app.ts"), "utf8").matchAll(RELATIVE_IMPORT)].map((match) => match[1]);
  assert.ok(appImports.includes("./routes/jobs.ts") && appImports.includes("./deps.ts"), appImports.join(", "));
});

test("no import cycle anywhere in services/", () => {
  assert.deepEqual(importCycles(), []);
});

test("common imports no room above it", () => {
  // common is the plumbing beneath api, worker and trainer: an import upwards would tie them together through it.
  const upwards = sourceFiles(path.join(servicesDir, "common")).flatMap((file) =>
    [...readFileSync(file, "utf8").matchAll(RELATIVE_IMPORT)]
      .map((match) => path.relative(servicesDir, path.resolve(path.dirname(file), match[1])))
      .filter((target) => !target.startsWith(`common${path.sep}`))
      .map((target) => `${path.relative(servicesDir, file)} → ${target}`),
  );
  assert.deepEqual(upwards, []);
});
