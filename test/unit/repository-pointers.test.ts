// The repository stands alone: every relative link in its Markdown resolves to a file in it, and
// no source, script or document reaches for a sibling checkout such as a "shared" folder beside it.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";

const root = path.join(import.meta.dirname, "..", "..");
const tracked = execFileSync("git", ["ls-files", "-z"], { cwd: root, encoding: "utf8" }).split("\0").filter(Boolean);
const MARKDOWN_LINK = /\]\(([^)#\s]+)(?:#[^)]*)?\)/g;

test("every relative Markdown link resolves inside the repository", () => {
  const broken: string[] = [];
  for (const file of tracked.filter((name) => name.endsWith(".md"))) {
    for (const [, target] of readFileSync(path.join(root, file), "utf8").matchAll(MARKDOWN_LINK)) {
      if (/^[a-z]+:/i.test(target)) continue;
      const resolved = path.resolve(root, path.dirname(file), target);
      if (!resolved.startsWith(root + path.sep) || !existsSync(resolved)) broken.push(`${file} → ${target}`);
    }
  }
  assert.deepEqual(broken, []);
});

test("no tracked file points at a checkout beside this one", () => {
  const outward = tracked
    .filter((name) => /\.(ts|md|py|sh|json|yml|Dockerfile)$/.test(name))
    .filter((name) => /\.\.\/shared\b|"\.\.", "shared"/.test(readFileSync(path.join(root, name), "utf8")));
  assert.deepEqual(outward, []);
});
