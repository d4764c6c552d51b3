// A classification dataset built to overfit: texts of random words with random labels, from a
// seeded generator. A model can only memorise it, so its validation loss rises after a while.
const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"];

/** `count` JSONL records (text, label) from `seed`. */
export function noiseRecords(count: number, seed: number): string {
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const lines = Array.from({ length: count }, () => {
    const text = Array.from({ length: 6 }, () => WORDS[Math.floor(next() * WORDS.length)]).join(" ");
    return JSON.stringify({ text, label: next() < 0.5 ? "negative" : "positive" });
  });
  return lines.join("\n") + "\n";
}
