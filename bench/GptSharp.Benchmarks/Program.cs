using BenchmarkDotNet.Running;

namespace GptSharp.Benchmarks;

/// <summary>
/// BenchmarkDotNet: dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*'
/// (e.g. --filter '*PeakFlops*' --job short). A quick Stopwatch pass over the GEMM shapes, without
/// BenchmarkDotNet: dotnet run -c Release --project bench/GptSharp.Benchmarks -- gemm-quick [threads] [case filter]
/// and of the FMA peak and the read bandwidth: ... -- peak-quick, ... -- bandwidth-quick; a training step phase by phase:
/// ... -- train-step-quick [threads] [steps] [context] [batch]; 1024 × 2 against 256 × 8 in alternating steps of one process: ... -- train-step-ratio [pairs] [threads] [long] [short] [tokens]; the causal attention alone (forward, backward, mask draw): ... -- attention-quick [context] [batch] [threads] [rounds]; HellaSwag/LAMBADA scoring on the 124M shape: ... -- eval-quick [examples] [threads] [batch]; the evaluation and the epoch sample beside the training forward, per token: ... -- outside-step-quick [rounds] [threads]; data-parallel steps under mpirun (bench/distributed.sh): ... -- data-parallel-quick [threads] [steps]; generation tokens/s against the bandwidth bound: ... -- generate-quick [tokens] [threads] [uncachedTokens]; a long prompt's prefill: ... -- prefill-quick [tokens] [rounds] [threads]; interleaved A/B of the skinny GEMM's choices on cached steps: ... -- skinny-ab [rounds] [threads];
/// the HTTP server with 1, 4 and 8 concurrent streaming clients on the 124M model: ... -- serve-quick [requests per client] [max tokens] [threads] [row-exact step rows]; its one- and 8-client phases per RowExactRows value, interleaved in one process: ... -- serve-ab [rounds] [max tokens] [threads] [rows,...];
/// one client's decode through generate, the scheduler alone and HTTP, interleaved: ... -- serve-one-ab [rounds] [max tokens] [threads]; serve-quick's phases with and without the prompt cache, interleaved: ... -- serve-cache-ab [rounds] [max tokens] [threads]; the forward step alone, one sequence through DecodeNext and DecodeNextSequences and 8 through DecodeNextSequences: ... -- serve-step-ab [rounds] [steps] [threads]; each linear shape of a step with 1 and 8 rows (VARIANTS=floats,... A/Bs the skinny kernel's prefetch lead): ... -- skinny-shapes [rounds] [threads];
/// the tokenizer on one thread and on all cores, interleaved: ... -- tokenizer-quick [rounds]; a full-size synthetic
/// OpenAI GPT-2 checkpoint for load time and peak memory: ... -- gpt2-synthetic DIR gpt2-small|...|gpt2-xl; a 124M training
/// checkpoint's write/read and a 1 GB token file's id check: ... -- run-io-quick [DIR]; `prepare` on a generated corpus as
/// .txt, JSON Lines and Parquet (MB/s, tokens/s, peak RSS): ... -- prepare-quick [MB=4096] [rounds=2] [threads] [DIR] [formats], the corpus alone, kept: ... -- prepare-corpus MB DIR; the readers alone on files: ... -- prepare-read PASSES FILES...;
/// int8 against float32 weights (decoding, prefill, bandwidth bound): ... -- int8-quick [rounds] [threads] [newTokens], and one
/// precision of a model from disk with its peak RSS: ... -- int8-model DIR float32|int8 [newTokens] [threads]; the one-row
/// int8 kernels alone, in cache and from memory: ... -- int8-kernels; GGUF export/import of the 124M shape and GptSharp against
/// llama.cpp on the same GGUF files: ... -- gguf-quick [rounds] [threads] [newTokens] [context|book] [DIR];
/// the book's model, float32 against int8, whole prefill/decode and each linear shape: ... -- book-profile [rounds] [threads] [prefill];
/// its greedy decoding alone (for a profiler; VARIANTS=fused:tasks,... A/Bs the skinny GEMM's switches): ... -- book-decode [tokens] [float32|int8] [threads];
/// a random book-shaped model file for timing the CLI: ... -- book-model PATH;
/// int8 kernels alone, in cache and from memory: ... -- int8-kernels; Hugging Face folder and ONNX export and import of the
/// 124M shape against reading its safetensors twice: ... -- export-quick [DIR] [rounds]
/// </summary>
public static class Program
{
    public static void Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "gemm-quick")
        {
            int threads = args.Length > 1 ? int.Parse(args[1]) : Environment.ProcessorCount;
            string filter = args.Length > 2 ? args[2] : "";
            GemmCase.Quick(GemmBenchmarks.Cases().Where(c => c.Contains(filter)), threads);
            return;
        }
        if (args.Length > 0 && args[0] == "prefill-quick")
        {
            int tokens = args.Length > 1 ? int.Parse(args[1]) : 1024;
            int rounds = args.Length > 2 ? int.Parse(args[2]) : 3;
            int threads = args.Length > 3 ? int.Parse(args[3]) : 2;
            PrefillBenchmark.Quick(tokens, rounds, threads);
            return;
        }
        if (args.Length > 0 && args[0] == "generate-quick")
        {
            GenerationQuick.Run(args.Length > 1 ? int.Parse(args[1]) : GenerationBenchmarks.NewTokens,
                args.Length > 2 ? int.Parse(args[2]) : 2, args.Length > 3 ? int.Parse(args[3]) : 20);
            return;
        }
        if (args.Length > 0 && args[0] == "skinny-ab")
        {
            GenerationQuick.SkinnyAb(args.Length > 1 ? int.Parse(args[1]) : 60, args.Length > 2 ? int.Parse(args[2]) : 2);
            return;
        }
        if (args.Length > 0 && args[0] == "serve-ab")
        {
            ServingBenchmark.AbAsync(args.Length > 1 ? int.Parse(args[1]) : 3, args.Length > 2 ? int.Parse(args[2]) : 32,
                args.Length > 3 ? int.Parse(args[3]) : Environment.ProcessorCount,
                args.Length > 4 ? args[4].Split(',').Select(int.Parse).ToArray() : [32, 8]).GetAwaiter().GetResult();
            return;
        }
        if (args.Length > 0 && args[0] == "serve-quick")
        {
            // A fifth argument sets the rows a step keeps row-exact (Gemm.RowExactRows: 32; 8 = no 18-token prompt rides
            // in a step beside decoding rows, as before; 7 = the packed GEMM for an 8-sequence step): A/B runs.
            if (args.Length > 4) ServingBenchmark.LimitStepRows(int.Parse(args[4]));
            ServingBenchmark.RunAsync(args.Length > 1 ? int.Parse(args[1]) : 4, args.Length > 2 ? int.Parse(args[2]) : 64,
                args.Length > 3 ? int.Parse(args[3]) : Environment.ProcessorCount).GetAwaiter().GetResult();
            return;
        }
        if (args.Length > 0 && args[0] == "serve-cache-ab")
        {
            ServingBenchmark.PromptCacheAbAsync(args.Length > 1 ? int.Parse(args[1]) : 6, args.Length > 2 ? int.Parse(args[2]) : 32,
                args.Length > 3 ? int.Parse(args[3]) : Environment.ProcessorCount).GetAwaiter().GetResult();
            return;
        }
        if (args.Length > 0 && args[0] == "serve-one-ab")
        {
            ServingOneClientBenchmark.RunAsync(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 32,
                args.Length > 3 ? int.Parse(args[3]) : Environment.ProcessorCount).GetAwaiter().GetResult();
            return;
        }
        if (args.Length > 0 && args[0] == "skinny-shapes")
        {
            SkinnyShapesBenchmark.Run(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 2);
            return;
        }
        if (args.Length > 0 && args[0] == "serve-step-ab")
        {
            ServingStepBenchmark.Run(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 16,
                args.Length > 3 ? int.Parse(args[3]) : Environment.ProcessorCount);
            return;
        }
        if (args.Length > 0 && args[0] == "eval-quick")
        {
            EvaluationBenchmark.Quick(args.Length > 1 ? int.Parse(args[1]) : 200, args.Length > 2 ? int.Parse(args[2]) : Environment.ProcessorCount,
                args.Length > 3 ? int.Parse(args[3]) : new GptSharp.Evaluation.BenchmarkOptions().BatchSize);
            return;
        }
        if (args.Length > 0 && args[0] == "peak-quick")
        {
            PeakFlopsBenchmark.Quick(1);
            PeakFlopsBenchmark.Quick(2);
            return;
        }
        if (args.Length > 0 && args[0] == "kernels-quick")
        {
            KernelProfile.Quick(args.Length > 1 ? int.Parse(args[1]) : 256, args.Length > 2 ? int.Parse(args[2]) : 2,
                args.Length > 3 ? int.Parse(args[3]) : 1);
            return;
        }
        if (args.Length > 0 && args[0] == "attention-quick")
        {
            KernelProfile.Attention(args.Length > 1 ? int.Parse(args[1]) : 1024, args.Length > 2 ? int.Parse(args[2]) : 2,
                args.Length > 3 ? int.Parse(args[3]) : 1, args.Length > 4 ? int.Parse(args[4]) : 3);
            return;
        }
        if (args.Length > 0 && args[0] == "train-step-ratio")
        {
            TrainingStepRatio.Quick(args.Length > 1 ? int.Parse(args[1]) : 6, args.Length > 2 ? int.Parse(args[2]) : 2,
                args.Length > 3 ? int.Parse(args[3]) : 1024, args.Length > 4 ? int.Parse(args[4]) : 256, args.Length > 5 ? int.Parse(args[5]) : 2048);
            return;
        }
        if (args.Length > 0 && args[0] == "train-step-quick")
        {
            int threads = args.Length > 1 ? int.Parse(args[1]) : 2;
            int steps = args.Length > 2 ? int.Parse(args[2]) : 3;
            int context = args.Length > 3 ? int.Parse(args[3]) : TrainingStepBenchmark.ContextLength;
            int batch = args.Length > 4 ? int.Parse(args[4]) : TrainingStepBenchmark.BatchSize;
            TrainingStepBenchmark.Quick(threads, steps, context, batch);
            return;
        }
        if (args.Length > 0 && args[0] == "int8-quick")
        {
            Int8Quick.Run(args.Length > 1 ? int.Parse(args[1]) : 3, args.Length > 2 ? int.Parse(args[2]) : 2, args.Length > 3 ? int.Parse(args[3]) : GenerationBenchmarks.NewTokens);
            return;
        }
        if (args.Length > 0 && args[0] == "int8-kernels")
        {
            Int8Quick.KernelSpeeds();
            return;
        }
        if (args.Length > 2 && args[0] == "int8-model")
        {
            Int8Quick.Model(args[1], args[2], args.Length > 3 ? int.Parse(args[3]) : 20, args.Length > 4 ? int.Parse(args[4]) : 2);
            return;
        }
        if (args.Length > 0 && args[0] == "data-parallel-quick")
        {
            DataParallelBenchmark.Quick(args.Length > 1 ? int.Parse(args[1]) : 1, args.Length > 2 ? int.Parse(args[2]) : 4);
            return;
        }
        if (args.Length > 2 && args[0] == "gpt2-synthetic")
        {
            SyntheticGpt2Checkpoint.Write(args[1], args[2]);
            return;
        }
        if (args.Length > 0 && args[0] == "outside-step-quick")
        {
            OutsideStepBenchmark.Quick(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 2);
            return;
        }
        if (args.Length > 0 && args[0] == "tokenizer-quick")
        {
            TokenizerBenchmarks.Quick(args.Length > 1 ? int.Parse(args[1]) : 7);
            return;
        }
        if (args.Length > 0 && args[0] == "prepare-quick")
        {
            PrepareBenchmark.Quick(args.Length > 1 ? int.Parse(args[1]) : 4096, args.Length > 2 ? int.Parse(args[2]) : 2,
                args.Length > 3 ? int.Parse(args[3]) : Environment.ProcessorCount, args.Length > 4 ? args[4] : null, args.Length > 5 ? args[5] : null);
            return;
        }
        if (args.Length > 2 && args[0] == "prepare-corpus")
        {
            PrepareBenchmark.Corpus(int.Parse(args[1]), args[2]);
            return;
        }
        if (args.Length > 2 && args[0] == "prepare-read")
        {
            PrepareBenchmark.Read(int.Parse(args[1]), args[2..]);
            return;
        }
        if (args.Length > 3 && args[0] == "prepare-one")
        {
            PrepareBenchmark.One(int.Parse(args[1]), args[2], args[3..]);
            return;
        }
        if (args.Length > 0 && args[0] == "run-io-quick")
        {
            RunIoBenchmark.Quick(args.Length > 1 ? args[1] : null);
            return;
        }
        if (args.Length > 0 && args[0] == "book-profile")
        {
            BookProfile.Quick(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 2, args.Length > 3 ? int.Parse(args[3]) : 200);
            return;
        }
        if (args.Length > 0 && args[0] == "book-decode")
        {
            BookProfile.DecodeOnly(args.Length > 1 ? int.Parse(args[1]) : 600, args.Length > 2 ? args[2] : "float32", args.Length > 3 ? int.Parse(args[3]) : 2);
            return;
        }
        if (args.Length > 1 && args[0] == "book-model")
        {
            BookProfile.WriteModel(args[1]);
            return;
        }
        if (args.Length > 0 && args[0] == "gguf-quick")
        {
            GgufBenchmark.Quick(args.Length > 1 ? int.Parse(args[1]) : 5, args.Length > 2 ? int.Parse(args[2]) : 2, args.Length > 3 ? int.Parse(args[3]) : 200,
                args.Length > 4 ? args[4] : "1024", args.Length > 5 ? args[5] : null);
            return;
        }
        if (args.Length > 0 && args[0] == "export-quick")
        {
            ExportBenchmark.Quick(args.Length > 1 ? args[1] : null, args.Length > 2 ? int.Parse(args[2]) : 3);
            return;
        }
        if (args.Length > 0 && args[0] == "bandwidth-quick")
        {
            MemoryBandwidthBenchmark.Quick(1);
            MemoryBandwidthBenchmark.Quick(2);
            return;
        }
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
