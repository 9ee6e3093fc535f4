// The same English-like corpus as bench/GptSharp.Benchmarks/EnglishCorpus.cs: words of The Verdict drawn with
// a seeded splitmix32 stream, joined by spaces, a blank line every 20-79 words, until it holds targetBytes bytes.
export const DEFAULT_SEED = 123;
export const DEFAULT_BYTES = 50 * 1024 * 1024;

export function generate(verdict, targetBytes = DEFAULT_BYTES, seed = DEFAULT_SEED) {
  const words = verdict.split(/[ \n\r\t]+/).filter((w) => w.length > 0);
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  const parts = [];
  let bytes = 0;
  let inParagraph = 0;
  let paragraphLength = 20 + (next() % 60);
  while (bytes < targetBytes) {
    const word = words[next() % words.length];
    parts.push(word);
    bytes += Buffer.byteLength(word, "utf8");
    if (++inParagraph === paragraphLength) {
      parts.push("\n\n");
      bytes += 2;
      inParagraph = 0;
      paragraphLength = 20 + (next() % 60);
    } else {
      parts.push(" ");
      bytes += 1;
    }
  }
  return parts.join("");
}

// 32-bit FNV-1a over bytes or ids, as EnglishCorpus.Fnv1a / IdChecksum.
export function fnv1a(values) {
  let hash = 2166136261;
  for (let i = 0; i < values.length; i++) hash = Math.imul(hash ^ values[i], 16777619) >>> 0;
  return hash >>> 0;
}
