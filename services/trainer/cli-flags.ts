// The CLI's flag handling: usage errors, number and required flags, the backend flag, and the job
// settings flags, which come from the declaration in settings.ts (names, help text and defaults).
import { BACKENDS, type BackendChoice, type Config } from "../common/config.ts";
import { initBackend, type BackendInfo } from "./backend.ts";
import { HYPERPARAMETER_SETTINGS, leafSettings, LORA_SETTINGS, type HyperparameterOptions, type LeafSetting, type LoraOptions, type Setting } from "./settings.ts";

export class UsageError extends Error {}

export function backendChoice(flag: string | undefined, configured: BackendChoice): BackendChoice {
  const choice = flag ?? configured;
  if (!(BACKENDS as readonly string[]).includes(choice)) throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${choice}"`);
  return choice as BackendChoice;
}

/** The backend the --backend flag (else TRAINER_BACKEND) names, initialised for this process. */
export function startBackend(flag: string | undefined, config: Config): Promise<BackendInfo> {
  return initBackend(backendChoice(flag, config.trainerBackend), { blasAddonPath: config.trainerBlasAddon });
}

export function numberFlag(values: Record<string, unknown>, name: string, fallback: number): number;
export function numberFlag(values: Record<string, unknown>, name: string): number | undefined;
export function numberFlag(values: Record<string, unknown>, name: string, fallback?: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new UsageError(`--${name} needs a number, got "${String(raw)}"`);
  return value;
}

export function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== "string" || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

/** Every flag with its setting; a group's members (early stopping) have a flag each. */
const allSettings = (): [string, LeafSetting][] => [...leafSettings(LORA_SETTINGS), ...leafSettings(HYPERPARAMETER_SETTINGS)].map(([, setting]) => [setting.flag, setting]);

/** parseArgs options for every job setting: booleans are switches, the rest take a value. */
export function settingFlagOptions(): Record<string, { type: "string" | "boolean" }> {
  return Object.fromEntries(allSettings().map(([flag, setting]) => [flag, { type: setting.type === "boolean" ? "boolean" : "string" }]));
}

function flagValue(setting: LeafSetting, raw: unknown): unknown {
  switch (setting.type) {
    case "integer":
    case "number":
      return numberFlag({ [setting.flag]: raw }, setting.flag);
    case "modules":
      return String(raw).split(",").map((name) => name.trim()).filter(Boolean);
    default:
      return raw;
  }
}

function given<T>(declarations: Record<string, Setting>, values: Record<string, unknown>): T {
  const out: Record<string, Record<string, unknown> | unknown> = {};
  for (const [name, setting] of leafSettings(declarations)) {
    if (values[setting.flag] === undefined) continue;
    const [head, member] = name.split(".");
    // Any member's flag turns its group on; the group's other members take their defaults.
    if (member) out[head] = { ...(out[head] as Record<string, unknown> | undefined), [member]: flagValue(setting, values[setting.flag]) };
    else out[head] = flagValue(setting, values[setting.flag]);
  }
  return out as T;
}

/** The settings the flags give; train() resolves every other one to its declared default. */
export function settingsFromFlags(values: Record<string, unknown>): { lora: LoraOptions; hyper: HyperparameterOptions } {
  return { lora: given<LoraOptions>(LORA_SETTINGS, values), hyper: given<HyperparameterOptions>(HYPERPARAMETER_SETTINGS, values) };
}

function placeholder(setting: LeafSetting): string {
  if (setting.type === "boolean") return "";
  if (setting.type === "enum") return ` ${setting.values.filter((value) => value !== null).join("|")}`;
  if (setting.type === "modules") return " a,b|all-linear";
  return setting.type === "integer" ? " N" : " F";
}

function defaultText(setting: LeafSetting): string {
  if (setting.type === "modules" || setting.default === undefined || setting.default === null || setting.default === false) return "";
  return ` [${setting.default}]`;
}

/** A help line: the flag and its placeholder in a column, then what it does. */
export function helpLine(flag: string, text: string): string {
  return `  ${flag.padEnd(32)} ${text}`;
}

/** One help line per job setting: flag, placeholder, meaning and default. */
export function settingsHelp(): string {
  return allSettings()
    .map(([flag, setting]) => helpLine(`--${flag}${placeholder(setting)}`, `${setting.description}${defaultText(setting)}`))
    .join("\n");
}
