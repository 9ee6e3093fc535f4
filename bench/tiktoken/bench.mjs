// Encode throughput of OpenAI's tiktoken (Rust core compiled to WASM, npm package `tiktoken`), single-threaded,
// on the corpus of bench/GptSharp.Benchmarks/TokenizerBenchmarks.cs.
//   cd bench/tiktoken && npm ci && node bench.mjs [--mb 50] [--runs 5]
import { readFileSync } from "node:fs";
import { get_encoding } from "tiktoken";
import { generate, fnv1a, DEFAULT_SEED } from "./corpus.mjs";

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const targetBytes = Math.round(arg("--mb", 50) * 1024 * 1024);
const runs = arg("--runs", 5);

const verdict = readFileSync(new URL("../../src/GptSharp/Resources/the-verdict.txt", import.meta.url), "utf8");
const corpus = generate(verdict, targetBytes, DEFAULT_SEED);
const utf8 = Buffer.from(corpus, "utf8");
console.log(`corpus: ${utf8.length} bytes, fnv1a ${fnv1a(utf8).toString(16).padStart(8, "0")}`);

const enc = get_encoding("gpt2");
enc.encode_ordinary(corpus.slice(0, 1 << 20)); // warm-up
const seconds = [];
let ids;
for (let r = 0; r < runs; r++) {
  const start = process.hrtime.bigint();
  ids = enc.encode_ordinary(corpus);
  seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
}
enc.free();
seconds.sort((a, b) => a - b);
const median = seconds[Math.floor(seconds.length / 2)];
console.log(`tiktoken ${JSON.parse(readFileSync(new URL("./node_modules/tiktoken/package.json", import.meta.url))).version} (WASM), node ${process.version}`);
console.log(`ids: ${ids.length}, checksum ${fnv1a(ids).toString(16).padStart(8, "0")}`);
console.log(`encode_ordinary: median ${median.toFixed(3)} s of ${runs} (best ${seconds[0].toFixed(3)} s) = ${(utf8.length / 1e6 / median).toFixed(2)} MB/s (1 MB = 10^6 bytes)`);
