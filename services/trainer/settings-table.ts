// The settings table of services/trainer/README.md, generated from the declaration in settings.ts; a
// unit test fails when the README's copy differs. Regenerate: npx tsx services/trainer/settings-table.ts
import { describeRange, leafSettings, SETTING_GROUPS, type LeafSetting, type Setting } from "./settings.ts";

function typeOf(setting: LeafSetting): string {
  if (setting.type === "enum") return setting.values.map((value) => (value === null ? "null" : `"${value}"`)).join(" \\| ");
  if (setting.type === "modules") return "string[]";
  return setting.type;
}

function defaultOf(setting: LeafSetting): string {
  if (setting.type === "modules") return "per architecture";
  return setting.default === undefined ? "unset" : `\`${JSON.stringify(setting.default)}\``;
}

/** One markdown row per setting: API name, CLI flag, type, range, default, meaning. */
export function settingsTable(): string {
  const rows = ["| Setting | CLI flag | Type | Range | Default | Meaning |", "| --- | --- | --- | --- | --- | --- |"];
  for (const [group, declarations] of Object.entries(SETTING_GROUPS)) {
    for (const [name, setting] of leafSettings(declarations as Record<string, Setting>)) {
      const range = setting.type === "integer" || setting.type === "number" ? describeRange(setting) : "";
      rows.push(`| \`${group}.${name}\` | \`--${setting.flag}\` | ${typeOf(setting)} | ${range} | ${defaultOf(setting)} | ${setting.description.replaceAll("|", "\\|")} |`);
    }
  }
  return rows.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(`${settingsTable()}\n`);
