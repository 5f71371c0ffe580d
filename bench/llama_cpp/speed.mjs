// llama.cpp's prompt and decode speed on GGUF files, measured as
// decode_bench measures fqpack's (bench/decode_bench.cc): a 128-token
// prompt batch of the token ids (i * 7919 + 13) % n_vocab into an empty
// context, then decode, one token at a time after that prompt. llama.cpp
// runs through node-llama-cpp's prebuilt CPU backends (ggml builds one per
// CPU generation and loads the widest this CPU runs), and the times are
// llama.cpp's own (llama_perf_context_print: prompt eval time, eval time),
// so none of the binding's overhead is counted.
//
//   node speed.mjs [--threads N] [--rounds N] FILE.gguf...
//
// Prints one JSON object per file and round: {file, threads,
// prompt_tokens_per_s, decode_tokens_per_s}. Each round is a fresh context.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";
import path from "node:path";

const kPromptTokens = 128;
const kDecodeTokens = 64;

function parseArgs(argv) {
  const out = {threads: 2, rounds: 1, files: []};
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === "--threads") out.threads = Number(argv[++i]);
    else if (argv[i] === "--rounds") out.rounds = Number(argv[++i]);
    else out.files.push(argv[i]);
  }
  if (out.files.length === 0 || !(out.threads >= 1) || !(out.rounds >= 1)) {
    console.error("usage: node speed.mjs [--threads N] [--rounds N] FILE.gguf...");
    process.exit(2);
  }
  return out;
}

// llama.cpp's timing lines, caught from its log; the CPU backend it loads
// is said once on stderr.
let timings = {};
let backendSaid = false;
function logger(level, message) {
  const m = /(prompt eval|\beval) time\s*=\s*([\d.]+) ms\s*\/\s*(\d+)/.exec(message);
  if (m) timings[m[1] === "prompt eval" ? "prompt" : "eval"] = {ms: Number(m[2]), n: Number(m[3])};
  else if (/loaded CPU backend/.test(message) && !backendSaid) {
    console.error("llama.cpp: " + message.trim());
    backendSaid = true;
  } else if (level === "error" || level === "fatal") console.error(message);
}

const args = parseArgs(process.argv.slice(2));
const llama = await getLlama({
  gpu: false, build: "never", maxThreads: args.threads, logLevel: LlamaLogLevel.log, logger});

for (const file of args.files) {
  const model = await llama.loadModel({modelPath: file, gpuLayers: 0});
  const nVocab = model.tokens.vocabSize ?? model.fileInsights.tokenizer?.vocabSize;
  const prompt = Array.from({length: kPromptTokens}, (_, i) => (i * 7919 + 13) % nVocab);
  // A first pass, not counted: it faults the mapped weights in, as
  // decode_bench's runs before the ones it times do.
  {
    const warm = await model.createContext({
      contextSize: 512, threads: args.threads, batchSize: kPromptTokens, sequences: 1});
    const sequence = warm.getSequence();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    await sequence.evaluateWithoutGeneratingNewTokens([1]);
    await warm.dispose();
  }
  for (let round = 0; round < args.rounds; ++round) {
    const context = await model.createContext({
      contextSize: 512, threads: args.threads, batchSize: kPromptTokens, sequences: 1,
      performanceTracking: true});
    const sequence = context.getSequence();
    await sequence.evaluateWithoutGeneratingNewTokens(prompt);
    let token = 1;
    for (let i = 0; i < kDecodeTokens; ++i) {
      await sequence.evaluateWithoutGeneratingNewTokens([token]);
      token = (token * 31 + 7) % nVocab;
    }
    timings = {};
    await context.printTimings();
    if (!timings.prompt || !timings.eval || timings.prompt.n !== kPromptTokens ||
        timings.eval.n !== kDecodeTokens) {
      console.error(`speed.mjs: ${file}: llama.cpp printed no timings for ${kPromptTokens} + ` +
                    `${kDecodeTokens} tokens (${JSON.stringify(timings)})`);
      process.exit(1);
    }
    console.log(JSON.stringify({
      file: path.basename(file), threads: args.threads,
      prompt_tokens_per_s: 1000 * timings.prompt.n / timings.prompt.ms,
      decode_tokens_per_s: 1000 * timings.eval.n / timings.eval.ms,
    }));
    await context.dispose();
  }
  await model.dispose();
}
