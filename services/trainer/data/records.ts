// The three dataset formats, one JSON object per line. Both the API (validating an
// upload) and the engine (reading a training file) check records with these functions.

export type DatasetFormat = "classification" | "completion" | "chat";
export const DATASET_FORMATS: readonly DatasetFormat[] = ["classification", "completion", "chat"];

export interface ClassificationRecord {
  text: string;
  label: string;
  /** Optional: who or what the example is about (a dialect, a region, a product); metrics are also reported per group. */
  group?: string;
}
export interface CompletionRecord {
  prompt: string;
  completion: string;
}
export type ChatRole = "system" | "user" | "assistant";
export interface ChatRecord {
  messages: { role: ChatRole; content: string }[];
}
export type DatasetRecord = ClassificationRecord | CompletionRecord | ChatRecord;

const CHAT_ROLES: readonly string[] = ["system", "user", "assistant"];

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The format a record's keys point to, or undefined when they fit none. */
export function detectFormat(value: unknown): DatasetFormat | undefined {
  if (!isObject(value)) return undefined;
  if ("messages" in value) return "chat";
  if ("prompt" in value || "completion" in value) return "completion";
  if ("text" in value || "label" in value) return "classification";
  return undefined;
}

/** A label or group: a non-empty string, or an integer kept as its decimal text so that "1" and 1 are one class. */
function classText(value: unknown): string | undefined {
  if (typeof value === "number" && Number.isInteger(value)) return String(value);
  if (typeof value === "string" && value.trim() !== "") return value;
  return undefined;
}

export type RecordCheck<T> = { ok: true; record: T } | { ok: false; reason: string };

function nonEmptyString(value: unknown, field: string): string | undefined {
  if (typeof value !== "string") return `"${field}" must be a string`;
  if (value.trim() === "") return `"${field}" must not be empty`;
  return undefined;
}

/**
 * Checks one parsed JSON line against `format`. Labels (and a classification record's optional
 * group) may be strings or integers; integers are kept as their decimal text.
 */
export function checkRecord(value: unknown, format: DatasetFormat): RecordCheck<DatasetRecord> {
  if (!isObject(value)) return { ok: false, reason: "each line must be a JSON object" };
  switch (format) {
    case "classification": {
      const textError = nonEmptyString(value.text, "text");
      if (textError) return { ok: false, reason: textError };
      const label = classText(value.label);
      if (label === undefined) return { ok: false, reason: '"label" must be a non-empty string or an integer' };
      if (value.group === undefined) return { ok: true, record: { text: value.text as string, label } };
      const group = classText(value.group);
      if (group === undefined) return { ok: false, reason: '"group" must be a non-empty string or an integer when given' };
      return { ok: true, record: { text: value.text as string, label, group } };
    }
    case "completion": {
      if (typeof value.prompt !== "string") return { ok: false, reason: '"prompt" must be a string' };
      const completionError = nonEmptyString(value.completion, "completion");
      if (completionError) return { ok: false, reason: completionError };
      return { ok: true, record: { prompt: value.prompt, completion: value.completion as string } };
    }
    case "chat": {
      const messages = value.messages;
      if (!Array.isArray(messages) || messages.length === 0) return { ok: false, reason: '"messages" must be a non-empty array' };
      for (const [index, message] of messages.entries()) {
        if (!isObject(message)) return { ok: false, reason: `messages[${index}] must be an object` };
        if (typeof message.role !== "string" || !CHAT_ROLES.includes(message.role)) {
          return { ok: false, reason: `messages[${index}].role must be one of ${CHAT_ROLES.join(", ")}` };
        }
        if (typeof message.content !== "string") return { ok: false, reason: `messages[${index}].content must be a string` };
      }
      if (!messages.some((message) => message.role === "assistant")) {
        return { ok: false, reason: "a chat example needs at least one assistant message to learn from" };
      }
      return { ok: true, record: { messages: messages as ChatRecord["messages"] } };
    }
  }
}
