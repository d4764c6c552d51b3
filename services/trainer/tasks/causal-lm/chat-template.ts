// Chat formatting from tokenizer_config.json's chat_template (Jinja, rendered by @huggingface/jinja),
// and the split of a rendered conversation into the parts the loss ignores and the assistant turns it
// trains on.
import { Template } from "@huggingface/jinja";
import type { ChatRecord } from "../../data/records.ts";

export type ChatMessage = ChatRecord["messages"][number];

/**
 * Used when tokenizer_config.json has no chat_template (GPT-2 and most base models): each turn is
 * "<|role|>\n" + content; an assistant turn ends with the EOS token (so a tuned model learns to stop),
 * every other turn with a newline; the generation prompt is "<|assistant|>\n".
 */
export const FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}" +
  "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChatTemplateError";
  }
}

export interface ChatSegment {
  text: string;
  /** True for an assistant turn (its content and end marker): the tokens the loss is computed on. */
  assistant: boolean;
}

function templateText(settings: Record<string, unknown>): string | undefined {
  const value = settings.chat_template;
  if (typeof value === "string") return value;
  // Some tokenizer_config.json files hold a list of named templates; "default" is the chat one.
  if (Array.isArray(value)) {
    const named = value as { name?: string; template?: string }[];
    return (named.find((entry) => entry.name === "default") ?? named[0])?.template;
  }
  return undefined;
}

export class ChatFormatter {
  private readonly template: Template;
  readonly usesFallback: boolean;

  constructor(
    settings: Record<string, unknown>,
    private readonly specialTokens: { bos_token: string; eos_token: string },
  ) {
    const text = templateText(settings);
    this.usesFallback = text === undefined;
    try {
      this.template = new Template(text ?? FALLBACK_CHAT_TEMPLATE);
    } catch (error) {
      throw new ChatTemplateError(`chat_template does not parse: ${(error as Error).message}`);
    }
  }

  render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, ...this.specialTokens });
    } catch (error) {
      throw new ChatTemplateError(`chat_template failed on this conversation: ${(error as Error).message}`);
    }
  }

  /**
   * The conversation up to its last assistant turn, cut where each assistant turn starts and ends:
   * rendering the messages before turn i with the generation prompt gives the text before the reply,
   * rendering through turn i gives the text through it. Templates whose renderings are not prefixes of
   * each other (rare) cannot be split and are refused.
   */
  segments(messages: ChatMessage[]): ChatSegment[] {
    const out: ChatSegment[] = [];
    let done = "";
    messages.forEach((message, index) => {
      if (message.role !== "assistant") return;
      const before = this.render(messages.slice(0, index), true);
      const through = this.render(messages.slice(0, index + 1), false);
      if (!before.startsWith(done) || !through.startsWith(before)) {
        throw new ChatTemplateError("this chat_template does not render conversations as extensions of their prefixes, so assistant turns cannot be located");
      }
      if (before.length > done.length) out.push({ text: before.slice(done.length), assistant: false });
      out.push({ text: through.slice(before.length), assistant: true });
      done = through;
    });
    return out;
  }
}
